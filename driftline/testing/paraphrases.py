"""Labelled text pairs for the near-duplicate cache: paraphrases (same meaning: the
cache may reuse the answer) and meaning changes (it must not).

Two template families that share no sentence: ``tune`` (to choose settings on) and
``eval`` (to report).  Each pair starts from a base text (one or two filled sentences)
and applies, with a fixed seed:

- a paraphrase: case, punctuation or spacing changed, a greeting or sign-off added, a
  filler word inserted, sentences swapped, a contraction expanded, a masked value
  re-tokenised; the ``eval`` family uses its own greetings and fillers;
- or a meaning change: a negation added or removed, a number changed, an antonym or a
  different product/content word swapped in (each meaning change may come with some
  paraphrase noise on top, which makes it harder).

>>> pairs = labelled_pairs("eval", 40, seed=1)
>>> len(pairs), {p.same for p in pairs} == {True, False}
(40, True)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_FAMILIES: dict[str, dict[str, list[str]]] = {
    "tune": {
        "templates": [
            "The {product} arrived {days} days late and the box was damaged.",
            "I am happy with the {product}, it works well.",
            "My {product} is broken and I want a refund for order {order}.",
            "Support answered quickly and solved my problem with the {product}.",
            "The {product} is cheap but the battery is weak.",
            "I was charged {amount} dollars twice for the {product}.",
            "The app is slow since the last update.",
            "Please send me a new {product}, the old one is noisy.",
        ],
        "products": ["kettle", "toaster", "headset", "keyboard", "monitor", "blender"],
        "greetings": ["Hi,", "Hello,", "Dear team,"],
        "signoffs": ["Thanks.", "Regards", "Thank you!"],
        "fillers": ["really", "just", "very"],
    },
    "eval": {
        "templates": [
            "The {product} stopped charging after {days} weeks of normal use.",
            "Delivery of order {order} was fast and the packaging was excellent.",
            "I love the {product}, the screen is bright and clear.",
            "The {product} is heavy and the handle feels cheap.",
            "Customer service ignored my emails about the {product} for {days} days.",
            "The invoice shows {amount} euros but the shop listed a lower price.",
            "Setup of the {product} was easy and the manual is helpful.",
            "The {product} makes a loud noise when it starts.",
            "My account is locked and the reset link is expired.",
            "The replacement {product} works perfectly, great job.",
        ],
        "products": ["vacuum cleaner", "coffee grinder", "tablet", "speaker", "router", "camera", "fridge"],
        "greetings": ["Good morning,", "Hey there,", "Hi support team,", "To whom it may concern,"],
        "signoffs": ["Cheers", "Best wishes", "Kind regards, a customer", "Thanks in advance."],
        "fillers": ["honestly", "actually", "literally", "quite", "simply"],
    },
}

_ANTONYMS = {
    "late": "early", "damaged": "intact", "happy": "unhappy", "well": "badly", "broken": "fine", "quickly": "slowly",
    "cheap": "expensive", "weak": "strong", "slow": "fast", "new": "used", "noisy": "quiet", "fast": "slow",
    "excellent": "terrible", "love": "hate", "bright": "dim", "heavy": "light", "easy": "hard", "helpful": "useless",
    "loud": "soft", "perfectly": "badly", "great": "poor", "locked": "open", "expired": "valid", "lower": "higher",
}
_NEGATABLE = re.compile(r"\b(is|was|works|arrived|answered|stopped|makes|feels)\b")
_NEGATED = re.compile(r"\b(is|was) not\b|\b(does|did) not (\w+)\b")
_NUMBER = re.compile(r"(?<![:\d])\b\d+(?:\.\d+)?\b")  # not inside a masked value <ORDER:1234>
_CONTRACT = {"I am": "I'm", "is not": "isn't", "was not": "wasn't", "does not": "doesn't", "did not": "didn't"}

PARAPHRASES = ("case", "punctuation", "spacing", "greeting", "signoff", "filler", "swap_sentences", "contraction", "masked_value")
MEANING_CHANGES = ("negation", "number", "antonym", "content_word")


@dataclass(frozen=True, slots=True)
class Pair:
    """Two texts; ``same`` is True for a paraphrase; ``change`` names the transformation."""

    a: str
    b: str
    same: bool
    change: str


def _fill(t: str, fam: dict[str, list[str]], rng: random.Random) -> str:
    return t.format(product=rng.choice(fam["products"]), days=rng.randint(2, 30), order=f"<ORDER:{rng.randint(1000, 9999)}>", amount=rng.randint(5, 900))


def _base(fam: dict[str, list[str]], rng: random.Random) -> list[str]:
    ts = rng.sample(fam["templates"], rng.choice((1, 2, 2, 3, 4)))
    return [_fill(t, fam, rng) for t in ts]


def _paraphrase(kind: str, sents: list[str], fam: dict[str, list[str]], rng: random.Random) -> list[str]:
    s = list(sents)
    if kind == "case":
        return [x.lower() if rng.random() < 0.5 else x.upper() for x in s]
    if kind == "punctuation":
        return [re.sub(r"[.,!]", rng.choice(["", "!", " -", ";"]), x) for x in s]
    if kind == "spacing":
        return [re.sub(" ", lambda _: " " * rng.randint(1, 3), x) for x in s]
    if kind == "greeting":
        return [rng.choice(fam["greetings"]), *s]
    if kind == "signoff":
        return [*s, rng.choice(fam["signoffs"])]
    if kind == "filler":
        i = rng.randrange(len(s))
        words = s[i].split()
        words.insert(rng.randint(1, len(words) - 1), rng.choice(fam["fillers"]))
        s[i] = " ".join(words)
        return s
    if kind == "swap_sentences":
        return s[::-1] if len(s) > 1 else [s[0].rstrip(".") + "!"]
    if kind == "contraction":
        out = []
        for x in s:
            for long, short in _CONTRACT.items():
                x = x.replace(long, short) if long in x else x.replace(short, long)
            out.append(x)
        return out
    if kind == "masked_value":
        return [re.sub(r"<ORDER:\d+>", lambda _: f"<ORDER:{rng.randint(1000, 9999)}>", x) for x in s] if any("<ORDER" in x for x in s) else [x.lower() for x in s]
    raise ValueError(kind)


def _change(kind: str, sents: list[str], fam: dict[str, list[str]], rng: random.Random) -> list[str] | None:
    """The sentences with their meaning changed, or None when this base text offers no such change."""
    i = rng.randrange(len(sents))
    x = sents[i]
    if kind == "negation":
        if _NEGATED.search(x):
            y = _NEGATED.sub(lambda m: m.group(1) or m.group(3), x, count=1)
        else:
            m = _NEGATABLE.search(x)
            if m is None:
                return None
            verb = m.group(1)
            repl = f"{verb} not" if verb in ("is", "was") else {"works": "does not work", "arrived": "did not arrive", "answered": "did not answer", "stopped": "did not stop", "makes": "does not make", "feels": "does not feel"}[verb]
            y = x[: m.start()] + repl + x[m.end() :]
    elif kind == "number":
        nums = list(_NUMBER.finditer(x))
        if not nums:
            return None
        m = rng.choice(nums)
        y = x[: m.start()] + str(int(float(m.group())) + rng.randint(1, 9)) + x[m.end() :]
    elif kind == "antonym":
        found = [w for w in _ANTONYMS if re.search(rf"\b{w}\b", x)]
        if not found:
            return None
        w = rng.choice(found)
        y = re.sub(rf"\b{w}\b", _ANTONYMS[w], x, count=1)
    elif kind == "content_word":
        present = [p for p in fam["products"] if p in x]
        if not present:
            return None
        p = present[0]
        y = x.replace(p, rng.choice([q for q in fam["products"] if q != p]), 1)
    else:
        raise ValueError(kind)
    out = list(sents)
    out[i] = y
    return out


def labelled_pairs(family: str, n: int, *, seed: int = 0, same_share: float = 0.5, noisy_changes: float = 0.5) -> list[Pair]:
    """``n`` labelled pairs of ``family`` (``tune`` or ``eval``); about ``same_share`` are paraphrases.
    Meaning changes are spread evenly over :data:`MEANING_CHANGES`, and ``noisy_changes`` of
    them also get a paraphrase on top."""
    fam = _FAMILIES[family]
    rng = random.Random(f"{family}:{seed}")
    out: list[Pair] = []
    k = 0
    while len(out) < n:
        sents = _base(fam, rng)
        a = " ".join(sents)
        if rng.random() < same_share:
            kind = rng.choice(PARAPHRASES)
            b = " ".join(_paraphrase(kind, sents, fam, rng))
            if b != a:
                out.append(Pair(a, b, True, kind))
            continue
        kind = MEANING_CHANGES[k % len(MEANING_CHANGES)]
        changed = _change(kind, sents, fam, rng)
        if changed is None:
            continue
        k += 1
        if rng.random() < noisy_changes:
            noise = rng.choice([p for p in PARAPHRASES if p != "masked_value"])
            changed = _paraphrase(noise, changed, fam, rng)
            kind = f"{kind}+{noise}"
        out.append(Pair(a, " ".join(changed), False, kind))
    return out
