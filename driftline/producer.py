"""Synthetic event producer: realistic support tickets and product reviews in several
languages, with a controllable share of PII and of malformed records.

The same seed gives the same events (ids, texts, times, defects), so tests and demos
are reproducible.

>>> gen = SyntheticProducer(seed=7, pii_rate=0.5, invalid_rate=0.0)
>>> events = list(gen.events(3))
>>> [e.record["event_id"] == f.record["event_id"] for e, f in zip(events, SyntheticProducer(seed=7, pii_rate=0.5).events(3))]
[True, True, True]
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import orjson
from faker import Faker

from driftline.schemas import encode_single_object

LANGUAGES: dict[str, str] = {
    "en": "en_US",
    "de": "de_DE",
    "fr": "fr_FR",
    "es": "es_ES",
    "it": "it_IT",
    "pt": "pt_BR",
    "nl": "nl_NL",
}

DEFECTS = ("bad_json", "missing_field", "wrong_type", "oversized_text", "invalid_utf8")

DEFAULT_START = datetime(2026, 1, 1, tzinfo=timezone.utc)

# Sentence templates per language. Slots: {product} {order} {days} {amount}.
_TICKET: dict[str, list[str]] = {
    "en": [
        "I ordered the {product} {days} days ago and it still has not arrived.",
        "My {product} stopped working after a week and I would like a replacement.",
        "The invoice for order {order} shows the wrong amount of {amount} dollars.",
        "I cannot log in to my account since the last update of the app.",
        "Could you please tell me when the {product} will be back in stock?",
        "The package for order {order} was damaged when it was delivered.",
        "I was charged twice for the same order and need a refund.",
        "Please cancel my subscription at the end of this month.",
    ],
    "de": [
        "Ich habe den {product} vor {days} Tagen bestellt und er ist immer noch nicht angekommen.",
        "Mein {product} funktioniert nach einer Woche nicht mehr und ich möchte einen Ersatz.",
        "Die Rechnung für die Bestellung {order} zeigt den falschen Betrag von {amount} Euro.",
        "Seit dem letzten Update der App kann ich mich nicht mehr anmelden.",
        "Können Sie mir bitte sagen, wann der {product} wieder verfügbar ist?",
        "Das Paket zur Bestellung {order} war bei der Lieferung beschädigt.",
        "Mir wurde dieselbe Bestellung zweimal berechnet und ich brauche eine Erstattung.",
        "Bitte kündigen Sie mein Abonnement zum Ende dieses Monats.",
    ],
    "fr": [
        "J'ai commandé le {product} il y a {days} jours et il n'est toujours pas arrivé.",
        "Mon {product} ne fonctionne plus après une semaine et je voudrais un remplacement.",
        "La facture de la commande {order} indique un montant erroné de {amount} euros.",
        "Je ne peux plus me connecter à mon compte depuis la dernière mise à jour.",
        "Pourriez-vous me dire quand le {product} sera de nouveau disponible ?",
        "Le colis de la commande {order} était endommagé à la livraison.",
        "J'ai été débité deux fois pour la même commande et je demande un remboursement.",
        "Merci de résilier mon abonnement à la fin de ce mois.",
    ],
    "es": [
        "Pedí el {product} hace {days} días y todavía no ha llegado.",
        "Mi {product} dejó de funcionar después de una semana y quiero un reemplazo.",
        "La factura del pedido {order} muestra un importe incorrecto de {amount} euros.",
        "No puedo iniciar sesión en mi cuenta desde la última actualización.",
        "¿Podrían decirme cuándo volverá a estar disponible el {product}?",
        "El paquete del pedido {order} llegó dañado.",
        "Me cobraron dos veces el mismo pedido y necesito un reembolso.",
        "Por favor, cancelen mi suscripción al final de este mes.",
    ],
    "it": [
        "Ho ordinato il {product} {days} giorni fa e non è ancora arrivato.",
        "Il mio {product} ha smesso di funzionare dopo una settimana e vorrei una sostituzione.",
        "La fattura dell'ordine {order} riporta un importo sbagliato di {amount} euro.",
        "Non riesco più ad accedere al mio account dall'ultimo aggiornamento.",
        "Potreste dirmi quando il {product} sarà di nuovo disponibile?",
        "Il pacco dell'ordine {order} è arrivato danneggiato.",
        "Mi è stato addebitato due volte lo stesso ordine e chiedo un rimborso.",
        "Vi prego di annullare il mio abbonamento alla fine di questo mese.",
    ],
    "pt": [
        "Comprei o {product} há {days} dias e ele ainda não chegou.",
        "Meu {product} parou de funcionar depois de uma semana e quero uma troca.",
        "A fatura do pedido {order} mostra o valor errado de {amount} reais.",
        "Não consigo entrar na minha conta desde a última atualização do aplicativo.",
        "Vocês podem me dizer quando o {product} volta ao estoque?",
        "A encomenda do pedido {order} chegou danificada.",
        "Fui cobrado duas vezes pelo mesmo pedido e preciso de um reembolso.",
        "Por favor, cancelem minha assinatura no fim deste mês.",
    ],
    "nl": [
        "Ik heb de {product} {days} dagen geleden besteld en hij is nog steeds niet aangekomen.",
        "Mijn {product} werkt na een week niet meer en ik wil graag een vervanging.",
        "De factuur van bestelling {order} toont het verkeerde bedrag van {amount} euro.",
        "Sinds de laatste update van de app kan ik niet meer inloggen.",
        "Kunt u mij vertellen wanneer de {product} weer op voorraad is?",
        "Het pakket van bestelling {order} was beschadigd bij de levering.",
        "Ik ben twee keer belast voor dezelfde bestelling en wil mijn geld terug.",
        "Wilt u mijn abonnement aan het einde van deze maand opzeggen?",
    ],
}

_REVIEW_POS: dict[str, list[str]] = {
    "en": ["The {product} is excellent and works perfectly.", "Great quality, fast delivery, I love it.", "Really happy with this purchase, highly recommended."],
    "de": ["Der {product} ist ausgezeichnet und funktioniert perfekt.", "Tolle Qualität, schnelle Lieferung, ich bin begeistert.", "Sehr zufrieden mit diesem Kauf, absolut empfehlenswert."],
    "fr": ["Le {product} est excellent et fonctionne parfaitement.", "Très bonne qualité, livraison rapide, je l'adore.", "Vraiment satisfait de cet achat, je le recommande vivement."],
    "es": ["El {product} es excelente y funciona perfectamente.", "Muy buena calidad, entrega rápida, me encanta.", "Muy contento con esta compra, totalmente recomendable."],
    "it": ["Il {product} è eccellente e funziona perfettamente.", "Ottima qualità, consegna veloce, lo adoro.", "Davvero soddisfatto di questo acquisto, lo consiglio."],
    "pt": ["O {product} é excelente e funciona perfeitamente.", "Ótima qualidade, entrega rápida, adorei.", "Muito satisfeito com esta compra, recomendo muito."],
    "nl": ["De {product} is uitstekend en werkt perfect.", "Geweldige kwaliteit, snelle levering, ik ben er blij mee.", "Erg tevreden met deze aankoop, echt een aanrader."],
}

_REVIEW_NEG: dict[str, list[str]] = {
    "en": ["The {product} broke after two days, terrible quality.", "Very disappointed, it does not work as described.", "Awful customer service and the product is useless."],
    "de": ["Der {product} ist nach zwei Tagen kaputt gegangen, schreckliche Qualität.", "Sehr enttäuscht, er funktioniert nicht wie beschrieben.", "Furchtbarer Kundenservice und das Produkt ist nutzlos."],
    "fr": ["Le {product} s'est cassé après deux jours, qualité horrible.", "Très déçu, il ne fonctionne pas comme décrit.", "Service client affreux et le produit est inutile."],
    "es": ["El {product} se rompió a los dos días, calidad terrible.", "Muy decepcionado, no funciona como se describe.", "Atención al cliente horrible y el producto es inútil."],
    "it": ["Il {product} si è rotto dopo due giorni, qualità terribile.", "Molto deluso, non funziona come descritto.", "Servizio clienti pessimo e il prodotto è inutile."],
    "pt": ["O {product} quebrou depois de dois dias, qualidade horrível.", "Muito decepcionado, não funciona como descrito.", "Atendimento péssimo e o produto é inútil."],
    "nl": ["De {product} ging na twee dagen kapot, vreselijke kwaliteit.", "Erg teleurgesteld, hij werkt niet zoals beschreven.", "Slechte klantenservice en het product is nutteloos."],
}

_PRODUCTS: dict[str, list[str]] = {
    "en": ["wireless headphones", "coffee machine", "running shoes", "smart watch", "vacuum cleaner", "desk lamp"],
    "de": ["Kopfhörer", "Kaffeevollautomat", "Laufschuh", "Staubsauger", "Wasserkocher", "Schreibtischstuhl"],
    "fr": ["casque sans fil", "lave-vaisselle", "aspirateur", "grille-pain", "sac à dos", "téléphone"],
    "es": ["auricular inalámbrico", "frigorífico", "aspirador", "reloj inteligente", "portátil", "colchón"],
    "it": ["frullatore", "aspirapolvere", "telefono", "materasso", "forno a microonde", "zaino"],
    "pt": ["fone de ouvido", "liquidificador", "aspirador de pó", "celular", "ventilador", "colchão"],
    "nl": ["koptelefoon", "stofzuiger", "koffiezetapparaat", "wasmachine", "fiets", "bureaustoel"],
}

# PII sentences per language. Slots: {email} {phone} {card} {iban} {address} {name}.
_PII: dict[str, dict[str, str]] = {
    "en": {"EMAIL": "You can reach me at {email}.", "PHONE": "Call me back on {phone}.", "CREDIT_CARD": "The card {card} was charged.", "IBAN": "Please refund to {iban}.", "ADDRESS": "Ship it to {address}.", "PERSON": "My name is {name}."},
    "de": {"EMAIL": "Sie erreichen mich unter {email}.", "PHONE": "Rufen Sie mich unter {phone} zurück.", "CREDIT_CARD": "Die Karte {card} wurde belastet.", "IBAN": "Bitte erstatten Sie auf {iban}.", "ADDRESS": "Lieferadresse: {address}.", "PERSON": "Mein Name ist {name}."},
    "fr": {"EMAIL": "Vous pouvez me joindre à {email}.", "PHONE": "Rappelez-moi au {phone}.", "CREDIT_CARD": "La carte {card} a été débitée.", "IBAN": "Merci de rembourser sur {iban}.", "ADDRESS": "Adresse de livraison : {address}.", "PERSON": "Je m'appelle {name}."},
    "es": {"EMAIL": "Pueden escribirme a {email}.", "PHONE": "Llámenme al {phone}.", "CREDIT_CARD": "Se cobró en la tarjeta {card}.", "IBAN": "Por favor, reembolsen a {iban}.", "ADDRESS": "Envíenlo a {address}.", "PERSON": "Me llamo {name}."},
    "it": {"EMAIL": "Potete scrivermi a {email}.", "PHONE": "Richiamatemi al {phone}.", "CREDIT_CARD": "La carta {card} è stata addebitata.", "IBAN": "Rimborsate su {iban}, grazie.", "ADDRESS": "Spedite a {address}.", "PERSON": "Mi chiamo {name}."},
    "pt": {"EMAIL": "Podem me escrever em {email}.", "PHONE": "Me liguem no {phone}.", "CREDIT_CARD": "O cartão {card} foi cobrado.", "IBAN": "Por favor, reembolsem para {iban}.", "ADDRESS": "Enviem para {address}.", "PERSON": "Meu nome é {name}."},
    "nl": {"EMAIL": "U kunt mij mailen op {email}.", "PHONE": "Bel mij terug op {phone}.", "CREDIT_CARD": "De kaart {card} is belast.", "IBAN": "Graag terugstorten op {iban}.", "ADDRESS": "Stuur het naar {address}.", "PERSON": "Mijn naam is {name}."},
}

# Language-neutral PII sentences (identifiers look the same in every language).
_PII_NEUTRAL: dict[str, str] = {
    "US_SSN": "SSN {ssn}.",
    "IP_ADDRESS": "IP {ip}.",
    "SECRET": "token={secret}",
}
for _lang in _PII:
    _PII[_lang].update(_PII_NEUTRAL)

PII_TYPES = tuple(_PII["en"])
"""Every PII type the producer can write; ADDRESS and PERSON are free text that the
default detector set does not find (see docs/privacy.md)."""

_SLOTS = {"EMAIL": "email", "PHONE": "phone", "CREDIT_CARD": "card", "IBAN": "iban", "ADDRESS": "address", "PERSON": "name", "US_SSN": "ssn", "IP_ADDRESS": "ip", "SECRET": "secret"}

SOURCES = ("support-desk", "reviews", "chat")
TENANTS = ("acme", "globex", "initech", None)


@dataclass(slots=True)
class SyntheticEvent:
    """One generated event: what was sent and what the test oracle needs to know."""

    record: dict[str, Any]
    payload: bytes
    language: str
    kind: Literal["ticket", "review"]
    pii: list[tuple[str, str]] = field(default_factory=list)
    defect: str | None = None

    @property
    def key(self) -> bytes:
        return str(self.record.get("event_id", "")).encode()


def encode_avro(record: dict[str, Any]) -> bytes:
    """Avro single-object encoding of a text event (marker, fingerprint, datum)."""
    return encode_single_object("text_event", record)


def encode_json(record: dict[str, Any]) -> bytes:
    out = dict(record)
    t = out.get("event_time")
    if isinstance(t, datetime):
        out["event_time"] = t.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return orjson.dumps(out)


class SyntheticProducer:
    """Deterministic generator of text events.

    ``pii_rate`` is the share of events that carry PII; ``invalid_rate`` the share that
    are malformed in one of :data:`DEFECTS` ways; ``negative_rate`` the share of reviews
    that are negative; ``length_factor`` repeats sentences to make longer texts;
    ``review_rate`` the share of events that are product reviews (source ``reviews``), the
    rest being support tickets and chat messages.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        pii_rate: float = 0.1,
        invalid_rate: float = 0.0,
        payload_format: Literal["json", "avro"] = "json",
        languages: dict[str, float] | None = None,
        negative_rate: float = 0.3,
        length_factor: int = 1,
        start_time: datetime = DEFAULT_START,
        spacing_seconds: float = 0.1,
        oversized_bytes: int = 64 * 1024,
        pii_types: tuple[str, ...] | list[str] | None = None,
        review_rate: float = 0.45,
    ) -> None:
        for name, rate in (("pii_rate", pii_rate), ("invalid_rate", invalid_rate), ("negative_rate", negative_rate), ("review_rate", review_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {rate}")
        if payload_format not in ("json", "avro"):
            raise ValueError(f"payload_format must be json or avro, got {payload_format!r}")
        self.seed = seed
        self.pii_rate = pii_rate
        self.invalid_rate = invalid_rate
        self.payload_format = payload_format
        langs = languages or {code: 1.0 for code in LANGUAGES}
        unknown = set(langs) - set(LANGUAGES)
        if unknown:
            raise ValueError(f"unknown languages {sorted(unknown)}; known: {sorted(LANGUAGES)}")
        self.languages = list(langs)
        self.language_weights = [langs[c] for c in self.languages]
        self.negative_rate = negative_rate
        self.review_rate = review_rate
        self.length_factor = max(1, int(length_factor))
        self.start_time = start_time
        self.spacing = timedelta(seconds=spacing_seconds)
        self.oversized_bytes = oversized_bytes
        self._fakers: dict[str, Faker] = {}
        self.pii_types = tuple(pii_types) if pii_types is not None else ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "ADDRESS", "PERSON")
        unknown_pii = set(self.pii_types) - set(PII_TYPES)
        if unknown_pii or not self.pii_types:
            raise ValueError(f"pii_types must be a non-empty subset of {PII_TYPES}, got {list(self.pii_types)}")

    def _faker(self, lang: str) -> Faker:
        fk = self._fakers.get(lang)
        if fk is None:
            fk = Faker(LANGUAGES[lang])
            fk.seed_instance(self.seed * 7919 + list(LANGUAGES).index(lang))
            self._fakers[lang] = fk
        return fk

    def events(self, n: int) -> Iterator[SyntheticEvent]:
        rng = random.Random(self.seed)
        for i in range(n):
            yield self._one(rng, i)

    def _one(self, rng: random.Random, i: int) -> SyntheticEvent:
        lang = rng.choices(self.languages, self.language_weights)[0]
        fk = self._faker(lang)
        kind: Literal["ticket", "review"] = "review" if rng.random() < self.review_rate else "ticket"
        product = rng.choice(_PRODUCTS[lang])
        slots = {"product": product, "order": f"A{rng.randint(100000, 999999)}", "days": rng.randint(2, 30), "amount": f"{rng.randint(5, 900)}.{rng.randint(0, 99):02d}"}
        attributes: dict[str, str] = {"lang_hint": lang, "product": product}
        if kind == "review":
            negative = rng.random() < self.negative_rate
            pool = _REVIEW_NEG[lang] if negative else _REVIEW_POS[lang]
            sentences = rng.sample(pool, 2)
            rating = rng.randint(1, 2) if negative else rng.randint(4, 5)
            attributes.update(rating=str(rating), service_rating=str(rng.randint(1, 5)), price=f"{rng.randint(3, 400)}", price_level=rng.choice(["cheap", "mid", "premium"]))
            source = "reviews"
        else:
            sentences = rng.sample(_TICKET[lang], 2)
            source = rng.choice(("support-desk", "chat"))
            attributes["priority"] = rng.choice(["low", "normal", "high"])
        sentences = [s.format(**slots) for s in sentences] * self.length_factor
        pii: list[tuple[str, str]] = []
        if rng.random() < self.pii_rate:
            kinds = rng.sample(self.pii_types, min(len(self.pii_types), rng.randint(1, 2)))
            for pii_type in kinds:
                value = self._pii_value(fk, rng, pii_type)
                slot = _SLOTS[pii_type]
                sentences.insert(rng.randint(0, len(sentences)), _PII[lang][pii_type].format(**{slot: value}))
                pii.append((pii_type, value))
        event_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        user_id = f"user-{rng.randint(1, 5000)}" if rng.random() < 0.8 else None
        record: dict[str, Any] = {
            "event_id": event_id,
            "event_time": self.start_time + self.spacing * i,
            "source": source,
            "tenant": rng.choice(TENANTS),
            "user_id": user_id,
            "text": " ".join(sentences),
            "attributes": attributes,
        }
        defect = None
        if rng.random() < self.invalid_rate:
            defect = rng.choice(DEFECTS)
        payload = self._encode(record, defect, rng)
        return SyntheticEvent(record=record, payload=payload, language=lang, kind=kind, pii=pii, defect=defect)

    @staticmethod
    def _pii_value(fk: Faker, rng: random.Random, pii_type: str) -> str:
        if pii_type == "EMAIL":
            return fk.email()
        if pii_type == "PHONE":
            return fk.phone_number()
        if pii_type == "CREDIT_CARD":
            digits = fk.credit_card_number(card_type=rng.choice(["visa16", "mastercard", "amex", "discover"]))
            style = rng.random()
            if style < 0.4:
                return digits
            sep = " " if style < 0.8 else "-"
            groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
            return sep.join(groups)
        if pii_type == "IBAN":
            return fk.iban()
        if pii_type == "ADDRESS":
            return fk.address().replace("\n", ", ")
        if pii_type == "US_SSN":
            return f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        if pii_type == "IP_ADDRESS":
            return fk.ipv4_public() if rng.random() < 0.7 else fk.ipv6()
        if pii_type == "SECRET":
            alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
            return "sk-" + "".join(rng.choice(alphabet) for _ in range(40))
        return fk.name()

    def _encode(self, record: dict[str, Any], defect: str | None, rng: random.Random) -> bytes:
        if defect is None:
            return encode_avro(record) if self.payload_format == "avro" else encode_json(record)
        if defect == "bad_json":
            good = encode_json(record)
            return good[: rng.randint(1, max(1, len(good) - 2))]
        if defect == "missing_field":
            broken = dict(record)
            del broken[rng.choice(("text", "source", "event_time", "event_id"))]
            return encode_json(broken)
        if defect == "wrong_type":
            broken = orjson.loads(encode_json(record))
            field_name = rng.choice(("event_time", "event_id", "text"))
            broken[field_name] = {"event_time": "not a time", "event_id": 12345, "text": ["not", "a", "string"]}[field_name]
            return orjson.dumps(broken)
        if defect == "oversized_text":
            big = dict(record)
            big["text"] = (record["text"] + " ") * (self.oversized_bytes // max(1, len(record["text"])) + 1)
            return encode_json(big)
        # invalid_utf8: valid JSON structure with bytes that are not UTF-8 inside the text
        good = encode_json(record)
        return good.replace(b'"text":"', b'"text":"\xff\xfe', 1)


def produce(
    bootstrap_servers: str,
    topic: str,
    events: int,
    *,
    seed: int = 0,
    rate: float | None = None,
    invalid_rate: float = 0.0,
    pii_rate: float = 0.1,
    payload_format: Literal["json", "avro"] = "json",
    partitions: int = 3,
    progress: bool = True,
    extra_config: dict[str, str] | None = None,
    generator: SyntheticProducer | None = None,
) -> list[SyntheticEvent]:
    """Produce ``events`` synthetic events to ``topic`` with an idempotent producer.

    Creates the topic (``partitions`` partitions) if it does not exist.  ``rate`` limits
    events per second.  Returns the events sent (for tests' oracles).
    """
    import time

    from confluent_kafka import Producer
    from tqdm import tqdm

    from driftline.kafka_io import ensure_topics, produce_with_backpressure

    ensure_topics(bootstrap_servers, [topic], partitions=partitions, extra=extra_config)
    conf = {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "linger.ms": 20, "compression.type": "zstd", "message.max.bytes": 2_000_000}
    conf.update(extra_config or {})
    producer = Producer(conf)
    gen = generator or SyntheticProducer(seed, pii_rate=pii_rate, invalid_rate=invalid_rate, payload_format=payload_format)
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(str(err))

    sent: list[SyntheticEvent] = []
    start = time.monotonic()
    bar = tqdm(total=events, unit="ev", desc=f"produce {topic}", disable=not progress, mininterval=0.5)
    for n, ev in enumerate(gen.events(events)):
        if rate:
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        produce_with_backpressure(producer, topic, value=ev.payload, key=ev.key, on_delivery=on_delivery)
        producer.poll(0)
        sent.append(ev)
        bar.update(1)
    remaining = producer.flush(60)
    bar.close()
    if remaining or failures:
        raise RuntimeError(f"{remaining} events undelivered, {len(failures)} delivery errors (first: {failures[:1]})")
    return sent
