"""A labelled corpus of short support-ticket-like documents for the PII benchmark.

Each document mixes locale filler text (Faker, several locales), one to three PII values
(with their entity type and kind) and one to three look-alike decoys that are not PII
(dates, prices, versions, order and invoice numbers, UUIDs, tracking numbers, card
numbers with a bad Luhn digit, IBANs with a bad checksum, times).  Everything is
generated from a seed, so two runs build the same corpus.

The phone numbers and names are held out from what the recognizers were written against:
phones come from Faker's own formats in seven locales (``phone_<locale>``), from
``phonenumbers``' example numbers of eight regions with their subscriber digits redrawn
(so most are unassigned) in national and international layouts (``phone_example_*``), and
from North American numbers with unassigned area codes (``phone_nanp_unassigned``); half
of them stand in a sentence without any phone word.  No region is configured in the
benchmark.  Names are Faker names of seven locales in the synthetic producer's sentence
patterns (``person_<lang>``: "My name is ...", "Mein Name ist ...", "Contact ... (...)").

    .venv/bin/python bench/pii_corpus.py 5     # prints five documents with their labels
"""

from __future__ import annotations

import base64
import json
import random
import string
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from faker import Faker

from driftline.testing.hostile import group as _group
from driftline.testing.hostile import luhn_complete

LOCALES = ("en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "en_GB")
#: The synthetic producer's seven locales (driftline.producer.LANGUAGES) and its name sentences.
PHONE_LOCALES = ("en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR", "nl_NL")
PHONE_REGIONS = ("US", "DE", "FR", "ES", "IT", "BR", "NL", "GB")
_NAME_SENTENCES = {
    "en_US": "My name is {name}.",
    "de_DE": "Mein Name ist {name}.",
    "fr_FR": "Je m'appelle {name}.",
    "es_ES": "Me llamo {name}.",
    "it_IT": "Mi chiamo {name}.",
    "pt_BR": "Meu nome é {name}.",
    "nl_NL": "Mijn naam is {name}.",
}


@dataclass
class Doc:
    text: str
    pii: list[tuple[str, str, str]] = field(default_factory=list)  # (entity, kind, value that must not survive)
    decoys: list[tuple[str, str]] = field(default_factory=list)  # (kind, value that must survive)


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# ----------------------------------------------------------------------------------- PII


def _card(f: Faker, rng: random.Random) -> tuple[str, str]:
    number = f.credit_card_number()
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain":
        return number, "card_plain"
    sep = " " if style == "space" else "-"
    if len(number) == 15 and number[0] == "3":
        return f"{number[:4]}{sep}{number[4:10]}{sep}{number[10:]}", f"card_{style}"
    return _group(number, 4, sep), f"card_{style}"


def _phone_na(f_us: Faker, rng: random.Random) -> tuple[str, str]:
    return f_us.phone_number(), "phone_na"


def _phone_intl(f: Faker, rng: random.Random) -> tuple[str, str]:
    for _ in range(50):
        p = f.phone_number()
        if p.startswith("+"):
            return p, "phone_intl"
    return "+44 20 7946 0" + str(rng.randint(100, 999)), "phone_intl"


def _iban(f: Faker, rng: random.Random) -> tuple[str, str]:
    iban = f.iban()
    if rng.random() < 0.5:
        return _group(iban, 4, " "), "iban_spaced"
    return iban, "iban_plain"


def _jwt(rng: random.Random) -> str:
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps({"sub": _alnum(rng, 10), "iat": rng.randint(1_600_000_000, 1_800_000_000)}).encode())
    return f"{head}.{body}.{_b64url(rng.randbytes(32))}"


def _private_key(rng: random.Random) -> str:
    body = base64.b64encode(rng.randbytes(180)).decode()
    lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
    kind = rng.choice(["RSA ", "EC ", "OPENSSH ", ""])
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"


def _phone_example(rng: random.Random) -> tuple[str, str]:
    """A number shaped like ``phonenumbers``' example for a region, subscriber digits redrawn."""
    import phonenumbers as pn

    region = rng.choice(PHONE_REGIONS)
    kind = rng.choice((pn.PhoneNumberType.FIXED_LINE, pn.PhoneNumberType.MOBILE))
    example = pn.example_number_for_type(region, kind)
    nsn = pn.national_significant_number(example)
    keep = 3 if len(nsn) > 8 else 2
    nsn = nsn[:keep] + "".join(rng.choice(string.digits) for _ in range(len(nsn) - keep))
    number = pn.parse("+" + str(example.country_code) + nsn, None)
    fmt = rng.choice((pn.PhoneNumberFormat.NATIONAL, pn.PhoneNumberFormat.INTERNATIONAL))
    name = "national" if fmt == pn.PhoneNumberFormat.NATIONAL else "international"
    return pn.format_number(number, fmt), f"phone_example_{name}"


def _phone_nanp_unassigned(rng: random.Random) -> tuple[str, str]:
    """A North American number whose area code is not assigned (N9X codes are reserved)."""
    area = f"{rng.randint(2, 9)}9{rng.randint(0, 9)}"
    exch = f"{rng.randint(2, 9)}{rng.randint(0, 9)}{rng.randint(0, 9)}"
    line = f"{rng.randint(0, 9999):04d}"
    return rng.choice([f"({area}) {exch}-{line}", f"{area}-{exch}-{line}", f"{area}.{exch}.{line}", f"+1 {area} {exch} {line}"]), "phone_nanp_unassigned"


_PHONE_WITH_WORD = ("Call me at {v}.", "phone: {v}", "You can reach me on {v} after 5pm", "Tel. {v}", "mobile: {v}")
_PHONE_NO_WORD = ("Back from holiday on Monday, {v}", "({v})", "My details: {v}", "ok {v} thanks", "{v} - any time")

Gen = Callable[[Faker, Faker, random.Random], tuple[str, str, str, str]]  # -> (entity, kind, value, sentence)


def _pii_generators() -> list[Gen]:
    def email(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = f.email() if r.random() < 0.6 else f.free_email()
        return "EMAIL", "email", v, r.choice([f"Please reply to {v}.", f"My email is {v}", f"contact: {v}", f"(sent from {v})"])

    def phone_na(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v, k = _phone_na(fu, r)
        return "PHONE", k, v, r.choice([f"Call me at {v}.", f"phone: {v}", f"You can reach me on {v} after 5pm", f"my number {v}"])

    def phone_intl(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v, k = _phone_intl(f, r)
        return "PHONE", k, v, r.choice([f"Call me at {v}.", f"Tel. {v}", f"whatsapp {v}", f"mobile: {v}"])

    def card(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v, k = _card(fu, r)
        return "CREDIT_CARD", k, v, r.choice([f"I paid with card {v} yesterday", f"card number: {v}", f"charged twice on {v}!", f"Kreditkarte {v}"])

    def ssn(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = fu.ssn()
        return "US_SSN", "ssn", v, r.choice([f"My SSN is {v}", f"ssn: {v}.", f"social security {v}"])

    def iban(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v, k = _iban(f, r)
        return "IBAN", k, v, r.choice([f"Refund to IBAN {v} please", f"IBAN: {v}", f"my account {v}."])

    def ipv4(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = f.ipv4_public() if r.random() < 0.7 else f.ipv4_private()
        return "IP_ADDRESS", "ipv4", v, r.choice([f"login from {v} failed", f"my IP is {v}.", f"server {v}:8443 times out"])

    def ipv6(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = f.ipv6()
        return "IP_ADDRESS", "ipv6", v, r.choice([f"login from {v} failed", f"client address {v}."])

    def openai(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = "sk-" + _alnum(r, 48) if r.random() < 0.5 else "sk-proj-" + _alnum(r, 74, string.ascii_letters + string.digits + "_-")
        return "SECRET", "openai_key", v, r.choice([f"my key {v} stopped working", f"OPENAI_API_KEY={v}", f"using {v}"])

    def aws(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = "AKIA" + _alnum(r, 16, string.ascii_uppercase + string.digits)
        return "SECRET", "aws_access_key", v, r.choice([f"access key {v} was rotated", f"aws id {v}"])

    def github(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = "ghp_" + _alnum(r, 36) if r.random() < 0.6 else "github_pat_" + _alnum(r, 22) + "_" + _alnum(r, 59)
        return "SECRET", "github_token", v, r.choice([f"token {v} leaked in CI", f"git push with {v} fails"])

    def bearer(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = _alnum(r, 40, string.ascii_letters + string.digits + "-_.")
        return "SECRET", "bearer_token", v, f"Authorization: Bearer {v}"

    def jwt(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = _jwt(r)
        return "SECRET", "jwt", v, r.choice([f"session cookie {v}", f"the jwt {v} expired"])

    def pkey(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = _private_key(r)
        body = v.split("\n")[1]
        return "SECRET", "private_key", body, f"here is my key:\n{v}\nplease help"

    def password(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v = f.password(length=r.randint(10, 16), special_chars=False)
        return "SECRET", "password_assignment", v, r.choice([f"password={v}", f'config: {{"password": "{v}"}}', f"db_password: {v}", f"PASSWORD = '{v}'"])

    def url_creds(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        user = f.user_name()
        pw = f.password(length=12, special_chars=False)
        scheme = r.choice(["https", "postgres", "redis", "ftp", "mongodb+srv"])
        url = f"{scheme}://{user}:{pw}@{f.domain_name()}/{f.uri_path()}"
        return "URL_CREDENTIALS", "url_credentials", f"{user}:{pw}", r.choice([f"connection string {url} refused", f"see {url}"])

    def phone_locale(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        loc = r.choice(PHONE_LOCALES)
        v = _FAKERS[loc].phone_number()
        return "PHONE", f"phone_{loc}", v, r.choice(_PHONE_WITH_WORD + _PHONE_NO_WORD).format(v=v)

    def phone_example(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v, k = _phone_example(r)
        return "PHONE", k, v, r.choice(_PHONE_WITH_WORD + _PHONE_NO_WORD).format(v=v)

    def phone_unassigned(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        v, k = _phone_nanp_unassigned(r)
        return "PHONE", k, v, r.choice(_PHONE_WITH_WORD + _PHONE_NO_WORD).format(v=v)

    def person(f: Faker, fu: Faker, r: random.Random) -> tuple[str, str, str, str]:
        loc = r.choice(PHONE_LOCALES)
        v = _FAKERS[loc].name()
        if r.random() < 0.25:
            return "PERSON", "person_contact", v, f"Contact {v} ({_FAKERS[loc].company()}) about it."
        return "PERSON", f"person_{loc}", v, _NAME_SENTENCES[loc].format(name=v)

    return [email, phone_na, phone_intl, card, ssn, iban, ipv4, ipv6, openai, aws, github, bearer, jwt, pkey, password, url_creds, phone_locale, phone_example, phone_unassigned, person]


_FAKERS: dict[str, Faker] = {}


# ---------------------------------------------------------------------------------- decoys


def _decoy_generators() -> list[Callable[[Faker, random.Random], tuple[str, str, str]]]:
    def date(f: Faker, r: random.Random) -> tuple[str, str, str]:
        d = f.date_between("-3y", "+1y")
        v = r.choice([d.isoformat(), d.strftime("%d.%m.%Y"), d.strftime("%m/%d/%Y"), d.strftime("%B %d, %Y"), d.strftime("%Y%m%d")])
        return "date", v, r.choice([f"ordered on {v}", f"since {v} nothing works", f"delivery date {v}."])

    def price(f: Faker, r: random.Random) -> tuple[str, str, str]:
        a = r.randint(1, 9999)
        c = r.randint(0, 99)
        v = r.choice([f"${a:,}.{c:02d}", f"{a:,}.{c:02d} €".replace(",", "."), f"EUR {a}.{c:02d}", f"R$ {a},{c:02d}", f"£{a}.{c:02d}"])
        return "price", v, r.choice([f"I was charged {v}", f"the total was {v}.", f"refund of {v} please"])

    def version(f: Faker, r: random.Random) -> tuple[str, str, str]:
        v = r.choice([f"v{r.randint(1, 20)}.{r.randint(0, 30)}.{r.randint(0, 99)}", f"{r.randint(1, 12)}.{r.randint(0, 9)}.{r.randint(0, 20)}", f"10.0.{r.randint(10000, 22999)}.{r.randint(100, 4000)}"])
        return "version", v, r.choice([f"app version {v} crashes", f"after updating to {v}", f"build {v}"])

    def order(f: Faker, r: random.Random) -> tuple[str, str, str]:
        v = r.choice([f"{r.randint(1_000_000_000, 9_999_999_999)}", f"A-{r.randint(2019, 2026)}-{r.randint(100000, 999999)}", f"ORD-{r.randint(20200101, 20261231)}-{r.randint(1000, 9999)}"])
        return "order_number", v, r.choice([f"Order #{v}", f"order number {v}", f"re: order {v}", f"invoice {v} is wrong"])

    def invoice(f: Faker, r: random.Random) -> tuple[str, str, str]:
        v = f"INV-{r.randint(2019, 2026)}-{r.randint(1, 99999):05d}"
        return "invoice_number", v, f"see {v}"

    def uuid_(f: Faker, r: random.Random) -> tuple[str, str, str]:
        v = str(uuid.UUID(int=r.getrandbits(128), version=4))
        return "uuid", v, r.choice([f"request id {v}", f"trace {v}", f"({v})"])

    def tracking(f: Faker, r: random.Random) -> tuple[str, str, str]:
        kind = r.random()
        if kind < 0.4:
            digits = "94" + "".join(r.choice(string.digits) for _ in range(20))
            v = _group(digits, 4, " ")
        elif kind < 0.7:
            v = "1Z" + _alnum(r, 6, string.ascii_uppercase + string.digits) + "".join(r.choice(string.digits) for _ in range(10))
        else:
            v = "".join(r.choice(string.digits) for _ in range(12))
        return "tracking_number", v, r.choice([f"tracking number {v}", f"parcel {v} is lost", f"shipment {v}"])

    def bad_card(f: Faker, r: random.Random) -> tuple[str, str, str]:
        prefix = r.choice(["4", "51", "53", "6011", "37"])
        length = 15 if prefix == "37" else 16
        body = prefix + "".join(r.choice(string.digits) for _ in range(length - len(prefix) - 1))
        good = luhn_complete(body)[-1]
        bad = str((int(good) + r.randint(1, 9)) % 10)
        number = body + bad
        v = _group(number, 4, r.choice([" ", "-"])) if length == 16 else number
        return "bad_luhn_card", v, r.choice([f"reference {v}", f"gift card {v} invalid", f"voucher code {v}"])

    def bad_iban(f: Faker, r: random.Random) -> tuple[str, str, str]:
        iban = f.iban()
        check = (int(iban[2:4]) + r.randint(1, 50)) % 97
        v = iban[:2] + f"{check:02d}" + iban[4:]
        if r.random() < 0.5:
            v = _group(v, 4, " ")
        return "bad_iban", v, f"is {v} the right account?"

    def time_(f: Faker, r: random.Random) -> tuple[str, str, str]:
        v = f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"
        return "time", v, f"at {v} it failed"

    return [date, price, version, order, invoice, uuid_, tracking, bad_card, bad_iban, time_]


def build_corpus(n: int, seed: int = 7) -> list[Doc]:
    """``n`` labelled documents, deterministic for a seed."""
    rng = random.Random(seed)
    fakers = {loc: Faker(loc) for loc in LOCALES}
    for i, fk in enumerate(fakers.values()):
        fk.seed_instance(seed + i)
    _FAKERS.clear()
    _FAKERS.update(fakers)
    f_us = fakers["en_US"]
    pii_gens = _pii_generators()
    decoy_gens = _decoy_generators()
    docs: list[Doc] = []
    for _ in range(n):
        loc = rng.choice(LOCALES)
        f = fakers[loc]
        parts: list[str] = [f.sentence(nb_words=rng.randint(4, 10))]
        doc = Doc(text="")
        for gen in rng.sample(pii_gens, rng.randint(1, 3)):
            entity, kind, value, sentence = gen(f, f_us, rng)
            doc.pii.append((entity, kind, value))
            parts.append(sentence)
        for gen in rng.sample(decoy_gens, rng.randint(1, 3)):
            kind, value, sentence = gen(f, rng)
            doc.decoys.append((kind, value))
            parts.append(sentence)
        head, rest = parts[0], parts[1:]
        rng.shuffle(rest)
        doc.text = " ".join([head, *rest, f.sentence(nb_words=rng.randint(3, 8))])
        docs.append(doc)
    return docs


if __name__ == "__main__":
    for d in build_corpus(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
        print(json.dumps({"text": d.text, "pii": d.pii, "decoys": d.decoys}, ensure_ascii=False))
