"""A planted PII set: realistic sentences with one known personal value each, and PII-free ones.

``planted_set(seed)`` returns sentences that each hold one value of a kind the PII stage should
replace (its exact span recorded) and 1,000 sentences without personal data but full of numbers
(arithmetic, dates, versions, times, prices, measurements, scores, chess squares …) on which any
replacement is a false positive. The PII benchmark and the tests measure recall and precision on
it. Every value is synthetic (reserved test ranges where they exist: 555 phone exchanges,
documentation IP ranges, Luhn-valid but made-up card numbers); deterministic from the seed.
"""

from __future__ import annotations

import difflib
import random
import re
import string
from dataclasses import dataclass, field

KINDS = ("email", "phone", "card", "ssn", "iban", "ipv4", "ipv6", "person", "address", "token", "passport")
PER_KIND = 30
CLEAN = 1000


@dataclass(frozen=True)
class PlantedSentence:
    """One sentence holding one planted value: ``text[start:end] == value``."""

    text: str
    kind: str
    value: str
    start: int
    end: int


FIRST = ["James", "Maria", "Anna", "David", "Emily", "Michael", "Sarah", "Robert", "Laura", "Daniel", "Olivia",
         "Thomas", "Sophie", "Lucas", "Hannah", "José", "Zoë", "Søren", "Aisha", "Hiroshi", "Chiara", "Mateusz",
         "Ingrid", "Priya", "Kwame", "Fatima", "Giulia", "Sven", "Camille", "Rafael"]  # fmt: skip
LAST = ["Smith", "Johnson", "Lopez", "Müller", "García", "Rossi", "Nakamura", "Kowalski", "Okafor", "Novak",
        "Dubois", "Andersson", "Patel", "Schneider", "O'Brien", "Fernández", "Jensen", "Kim", "Moreau", "Bianchi",
        "Walker", "Hughes", "Becker", "Fischer", "Larsen", "Mensah", "Haddad", "Ivanova", "Silva",
        "Tanaka"]  # fmt: skip
TITLES = ["Dr.", "Mr.", "Ms.", "Mrs.", "Prof."]
STREETS = ["Baker", "Elm", "Maple", "Oak", "Pine", "Cedar", "Washington", "Lincoln", "Highland", "Sunset", "Park",
           "Lake", "Hill", "Church", "Mill", "Victoria", "King", "Queen", "Market", "Spring"]  # fmt: skip
SUFFIXES = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Lane", "Boulevard", "Blvd", "Drive", "Way", "Court",
            "Place"]  # fmt: skip
CITIES = [("Springfield", "IL", "62704"), ("Portland", "OR", "97205"), ("Austin", "TX", "78701"),
          ("Denver", "CO", "80202"), ("Boston", "MA", "02108"), ("Madison", "WI", "53703")]  # fmt: skip
DOMAINS = ["example.com", "mail.example.org", "example.co.uk", "test.example.net", "example.de"]

TEMPLATES: dict[str, list[str]] = {
    "email": [
        "Please write to {} if the invoice is wrong.",
        "my email is {} and I never got the reset link",
        "Contact: {} (billing questions only)",
        "can you cc {} on the reply?",
        "The form rejects {} as invalid, why?",
    ],  # fmt: skip
    "phone": [
        "You can call me on {} after six.",
        "my number is {}, text first please",
        "Support line: {} (weekdays)",
        "the courier said to ring {} when you arrive",
        "Is {} a valid format for the signup form?",
    ],  # fmt: skip
    "card": [
        "I was charged twice on card {} yesterday.",
        "my card number is {} and it keeps declining",
        "Card: {}, expiry 09/27",
        "why does the checkout reject {}?",
        "refund it to {} please",
    ],  # fmt: skip
    "ssn": [
        "My SSN is {} for the tax form.",
        "the form asks for {} again, is that safe?",
        "SSN {} was rejected",
        "Employee record: {}, hired 2019",
    ],  # fmt: skip
    "iban": [
        "Please send the refund to {} by Friday.",
        "my IBAN is {} (Sparkasse)",
        "IBAN: {}",
        "the transfer to {} bounced twice",
    ],  # fmt: skip
    "ipv4": [
        "The server at {} keeps timing out.",
        "my router shows {} as the gateway",
        "Blocked IP: {}",
        "ssh to {} fails with permission denied",
    ],  # fmt: skip
    "ipv6": [
        "The host {} does not answer pings.",
        "my laptop got {} from DHCP",
        "Allowlist {} please",
        "curl to [{}] returns 403",
    ],  # fmt: skip
    "person": [
        "Please forward this to {} before noon.",
        "{} said the report is late.",
        "hi, this is {} from accounting, can you help?",
        "I had a meeting with {} yesterday about the budget.",
        "could you write a thank-you note to {} for the flowers?",
        "my colleague {} cannot log in",
        "Send the contract to {} and copy me.",
        "yesterday {} asked me about the refund policy",
    ],  # fmt: skip
    "address": [
        "I live at {}.",
        "please ship the order to {} by Monday",
        "Our office moved to {} last year.",
        "the package went to {} instead of my home",
        "Billing address: {}",
        "can you deliver to {} after 5pm?",
    ],  # fmt: skip
    "token": [
        "My API key is {} and it stopped working.",
        "the log printed {} by mistake",
        "export TOKEN={} then run the script",
        "is it safe that {} is in the repo?",
    ],  # fmt: skip
    "passport": [
        "My passport number is {} for the booking.",
        "Passport No. {}, expires 2031",
        "passport: {} (issued in Berlin)",
        "the visa form says passport # {} is invalid",
        "renew PASSPORT {} before the trip",
    ],  # fmt: skip
}


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _alnum(rng: random.Random, n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _luhn_complete(prefix_and_body: str) -> str:
    """Append the Luhn check digit."""
    total = 0
    for i, ch in enumerate(reversed(prefix_and_body)):
        n = int(ch)
        if i % 2 == 0:  # doubled: the check digit will sit to their right
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return prefix_and_body + str((10 - total % 10) % 10)


def _iban_complete(country: str, bban: str) -> str:
    """Return a valid IBAN (ISO 13616 mod-97 check digits)."""
    moved = bban + country + "00"
    number = int("".join(str(int(c, 36)) for c in moved))
    return f"{country}{98 - number % 97:02d}{bban}"


def email(rng: random.Random, i: int) -> str:
    first, last = rng.choice(FIRST).lower(), rng.choice(LAST).lower()
    first = first.encode("ascii", "ignore").decode() or "user"
    last = last.encode("ascii", "ignore").decode().replace("'", "") or "name"
    local = [f"{first}.{last}", f"{first[0]}{last}{rng.randint(1, 99)}", f"{first}_{last}+shop", f"{last}.{first}"]
    return f"{local[i % 4]}@{rng.choice(DOMAINS)}"


def phone(rng: random.Random, i: int) -> str:
    area, line = rng.randint(201, 989), _digits(rng, 4)
    forms = [f"({area}) 555-{line}", f"{area}-555-{line}", f"{area}.555.{line}", f"+1 {area} 555 {line}",
             f"+44 20 7946 {_digits(rng, 4)}", f"+49 30 {_digits(rng, 6)}", f"+33 1 {rng.randint(10, 99)} "
             f"{rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}", f"0044 20 7946 {_digits(rng, 4)}",
             f"1-800-555-{line}", f"+1-{area}-555-{line}"]  # fmt: skip
    return forms[i % len(forms)]


def card(rng: random.Random, i: int) -> str:
    brand = i % 4
    groups: tuple[int, ...]
    if brand == 0:  # Visa, 16 digits
        number, groups = _luhn_complete("4" + _digits(rng, 14)), (4, 4, 4, 4)
    elif brand == 1:  # Mastercard
        number, groups = _luhn_complete(str(rng.randint(51, 55)) + _digits(rng, 13)), (4, 4, 4, 4)
    elif brand == 2:  # American Express, 15 digits as 4-6-5
        number, groups = _luhn_complete(rng.choice(["34", "37"]) + _digits(rng, 12)), (4, 6, 5)
    else:  # Discover
        number, groups = _luhn_complete("6011" + _digits(rng, 11)), (4, 4, 4, 4)
    sep = ["", " ", "-"][i % 3]
    parts, at = [], 0
    for g in groups:
        parts.append(number[at : at + g])
        at += g
    return sep.join(parts)


def ssn(rng: random.Random, i: int) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def iban(rng: random.Random, i: int) -> str:
    upper = string.ascii_uppercase
    country = ["DE", "GB", "FR", "NL", "ES", "IT"][i % 6]
    bban = {
        "DE": _digits(rng, 18),
        "GB": _alnum(rng, 4, upper) + _digits(rng, 14),
        "FR": _digits(rng, 10) + _alnum(rng, 11, upper + string.digits) + _digits(rng, 2),
        "NL": _alnum(rng, 4, upper) + _digits(rng, 10),
        "ES": _digits(rng, 20),
        "IT": _alnum(rng, 1, upper) + _digits(rng, 10) + _alnum(rng, 12, upper + string.digits),
    }[country]
    value = _iban_complete(country, bban)
    return " ".join(value[k : k + 4] for k in range(0, len(value), 4)) if i % 2 else value


def ipv4(rng: random.Random, i: int) -> str:
    net = ["192.0.2", "198.51.100", "203.0.113", f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}"][i % 4]
    return f"{net}.{rng.randint(1, 254)}"


def ipv6(rng: random.Random, i: int) -> str:
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(6)]
    if i % 2:
        return "2001:db8:" + ":".join(groups)
    return f"2001:db8:{groups[0]}::{groups[1]}:{groups[2]}"


def person(rng: random.Random, i: int) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return f"{first} {last}"


def address(rng: random.Random, i: int) -> str:
    number, street, suffix = rng.randint(1, 9999), rng.choice(STREETS), rng.choice(SUFFIXES)
    city, state, zip_code = rng.choice(CITIES)
    forms = [
        f"{number} {street} {suffix}",
        f"{number} {street} {suffix}, {city}, {state} {zip_code}",
        f"{number} {street} {suffix}, Apt {rng.randint(1, 40)}, {city}, {state} {zip_code}",
        f"{rng.randint(1, 300)}{rng.choice('AB')} {street} {suffix}, London",
        f"{rng.choice(['Haupt', 'Linden', 'Berg', 'Schiller', 'Goethe'])}straße {rng.randint(1, 120)}, "
        f"{_digits(rng, 5)} Berlin",
        f"{rng.randint(1, 200)} rue de {rng.choice(['Rivoli', 'la Paix', 'Vaugirard', 'Provence'])}, "
        f"750{rng.randint(10, 20)} Paris",
        f"{number} {rng.choice(STREETS)} {rng.choice(STREETS)} {suffix}, Suite {rng.randint(100, 999)}",
    ]  # fmt: skip
    return forms[i % len(forms)]


def token(rng: random.Random, i: int) -> str:
    forms = [
        "sk-" + _alnum(rng, 48),
        "sk-proj-" + _alnum(rng, 40, string.ascii_letters + string.digits + "_-"),
        "AKIA" + _alnum(rng, 16, string.ascii_uppercase + string.digits),
        "ghp_" + _alnum(rng, 36),
        "github_pat_" + _alnum(rng, 22) + "_" + _alnum(rng, 59),
        f"xoxb-{_digits(rng, 12)}-{_digits(rng, 13)}-{_alnum(rng, 24)}",
    ]
    return forms[i % len(forms)]


def passport(rng: random.Random, i: int) -> str:
    upper = string.ascii_uppercase
    forms = [_digits(rng, 9), "C" + _alnum(rng, 8, upper + string.digits),
             _digits(rng, 2) + _alnum(rng, 2, upper) + _digits(rng, 5),
             rng.choice("XYZ") + _digits(rng, 7)]  # fmt: skip
    value = forms[i % len(forms)]
    return value if any(c.isdigit() for c in value) else value[:-1] + "7"


_MAKERS = {"email": email, "phone": phone, "card": card, "ssn": ssn, "iban": iban, "ipv4": ipv4, "ipv6": ipv6,
           "person": person, "address": address, "token": token, "passport": passport}  # fmt: skip


def _planted(rng: random.Random, kind: str, i: int) -> PlantedSentence:
    value = _MAKERS[kind](rng, i)
    template = TEMPLATES[kind][i % len(TEMPLATES[kind])]
    if kind == "person" and i % 5 == 0:
        title = rng.choice(TITLES)
        template = template.replace("{}", f"{title} {{}}")
    start = template.index("{}")
    text = template.replace("{}", value)
    return PlantedSentence(text=text, kind=kind, value=value, start=start, end=start + len(value))


CLEAN_TEMPLATES = [
    "{a} * {b} = {ab}", "The answer is {ab}, since {a} times {b} is {ab}.", "so {a} + {b} = {apb}, not {ab}",
    "Compute {a}/{b}: it is about {ratio}.", "The meeting moved to {date} at {time}.",
    "It was released on {dmy} and patched on {date}.", "Upgrade to version {ver} (we run {ver2} now).",
    "Python {py} fixed it; numpy 1.{b}.{a} broke it again.", "The train leaves at {time} and arrives at {time2}.",
    "It costs ${price} or {eur} EUR with tax.", "We shipped {n} orders in {year}, up {pct}% on {year2}.",
    "The board measures {a} x {b} cm and weighs {kg} kg.", "Final score: {a}-{b} after {n} minutes.",
    "White plays Nf3, then e4 and Qd{d}; black answers with Bb{d} on move {b}.", "the ratio is {a}:{b} by volume",
    "Set the timeout to {n} ms and retry {a} times.", "Temperature dropped to -{a} degrees at {time}.",
    "In {year} the population was {big}.", "Sprint {a} has {b} tickets and {n} story points.",
    "Item #{n} is out of stock until {date}.", "the sum of 1 to {a} is {tri}", "matrix is {a}x{b}, rank {d}",
    "Round {ab} to {rnd}.", "We ran {n} steps with lr 3e-{d} and batch {b}.", "Latitude {lat}, longitude -{lon}.",
    "Page {a} of {big}, line {b}.", "Order {big} arrives in {d} days.", "The loan is {big} at {pct}% for {a} years.",
    "Build {n} took {a} min {b} s on {d} cores.", "x = {a}, y = {b}, so 2x + y = {lin}",
]  # fmt: skip


def _clean(rng: random.Random, i: int) -> str:
    a, b, d = rng.randint(2, 99), rng.randint(2, 99), rng.randint(1, 9)
    year = rng.randint(1990, 2030)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    values = {
        "a": a, "b": b, "d": d, "ab": a * b, "apb": a + b, "ratio": f"{a / b:.3f}",
        "date": f"{year}-{month:02d}-{day:02d}", "dmy": f"{day:02d}/{month:02d}/{year}",
        "time": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        "time2": f"{rng.randint(0, 23)}:{rng.randint(10, 59)}",
        "ver": f"v{d}.{a}.{b}", "ver2": f"{d}.{b}.{a}", "py": f"3.{rng.randint(8, 13)}.{d}",
        "price": f"{rng.randint(1, 9999):,}.{rng.randint(0, 99):02d}",
        "eur": f"{rng.randint(1, 999)},{rng.randint(0, 99):02d}",
        "n": rng.randint(100, 99999), "year": year, "year2": year - 1, "pct": round(rng.uniform(0.1, 99), 1),
        "kg": round(rng.uniform(0.1, 80), 2), "big": rng.randint(100_000, 9_999_999), "tri": a * (a + 1) // 2,
        "rnd": round(a * b, -1), "lat": round(rng.uniform(-80, 80), 4), "lon": round(rng.uniform(0, 170), 4),
        "lin": 2 * a + b,
    }  # fmt: skip
    return CLEAN_TEMPLATES[i % len(CLEAN_TEMPLATES)].format(**values)


def planted_set(
    seed: int = 0, *, per_kind: int = PER_KIND, clean: int = CLEAN
) -> tuple[list[PlantedSentence], list[str]]:
    """Return ``per_kind`` planted sentences of every kind in ``KINDS`` and ``clean`` PII-free sentences."""
    rng = random.Random(seed)
    planted = [_planted(rng, kind, i) for kind in KINDS for i in range(per_kind)]
    return planted, [_clean(rng, i) for i in range(clean)]


_PLACEHOLDER = re.compile(r"<([A-Z0-9]+)>")
_MARK = 0xE000  # placeholders become one private-use character each before the texts are aligned


@dataclass
class Scores:
    """Recall per planted kind, replacements per placeholder kind (hits on planted values, and on clean text)."""

    planted: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    replaced: dict[str, int] = field(default_factory=dict)  # replacements per placeholder kind, all sentences
    hits: dict[str, int] = field(default_factory=dict)  # of them, replacements overlapping a planted value
    clean_hits: dict[str, int] = field(default_factory=dict)  # replacements in the PII-free sentences
    clean_touched: int = 0  # PII-free sentences with any replacement
    missed: list[PlantedSentence] = field(default_factory=list)

    def recall(self, kind: str) -> float:
        return self.found.get(kind, 0) / max(self.planted.get(kind, 0), 1)

    def precision(self, kind: str) -> float | None:
        n = self.replaced.get(kind, 0)
        return self.hits.get(kind, 0) / n if n else None


def _removed(original: str, scrubbed: str) -> tuple[list[bool], list[tuple[str, int, int]]]:
    """Align a text with its scrubbed form: whether each original character survived, and each replacement
    as (placeholder kind, start, end) over the original."""
    names: list[str] = []

    def mark(m: re.Match[str]) -> str:
        names.append(m.group(1).lower())
        return chr(_MARK + len(names) - 1)

    marked = _PLACEHOLDER.sub(mark, scrubbed)
    kept = [False] * len(original)
    replacements = []
    matcher = difflib.SequenceMatcher(None, original, marked, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            kept[i1:i2] = [True] * (i2 - i1)
            continue
        for ch in marked[j1:j2]:
            if ord(ch) >= _MARK and ord(ch) - _MARK < len(names):
                replacements.append((names[ord(ch) - _MARK], i1, i2))
    return kept, replacements


def score(planted: list[PlantedSentence], clean: list[str], planted_out: list[str], clean_out: list[str]) -> Scores:
    """Score a scrubber's output (texts in the same order as ``planted`` and ``clean``).

    A planted value is *found* when none of its letters and digits survive: aligning the sentence
    with its scrubbed form (each placeholder read as one unmatched character), no alphanumeric
    character of the value's span is part of an unchanged stretch. A replacement *hits* when the
    original stretch it replaced overlaps the planted span; precision of a placeholder kind is its
    hits over all its replacements, in planted and clean sentences together.
    """
    scores = Scores()
    for sentence, out in zip(planted, planted_out, strict=True):
        kept, replacements = _removed(sentence.text, out)
        scores.planted[sentence.kind] = scores.planted.get(sentence.kind, 0) + 1
        survived = any(kept[k] and sentence.text[k].isalnum() for k in range(sentence.start, sentence.end))
        if survived:
            scores.missed.append(sentence)
        else:
            scores.found[sentence.kind] = scores.found.get(sentence.kind, 0) + 1
        for kind, start, end in replacements:
            scores.replaced[kind] = scores.replaced.get(kind, 0) + 1
            if start < sentence.end and end > sentence.start:
                scores.hits[kind] = scores.hits.get(kind, 0) + 1
    for text, out in zip(clean, clean_out, strict=True):
        _, replacements = _removed(text, out)
        scores.clean_touched += bool(replacements)
        for kind, _, _ in replacements:
            scores.replaced[kind] = scores.replaced.get(kind, 0) + 1
            scores.clean_hits[kind] = scores.clean_hits.get(kind, 0) + 1
    return scores
