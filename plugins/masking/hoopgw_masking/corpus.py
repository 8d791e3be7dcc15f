"""Labelled generated values for measuring detection quality, and fixed-seed fake people.

Nothing here runs in the gateway: the quality script (:mod:`hoopgw_masking.quality`), the tests
and the benchmark use it. Generators take a :class:`random.Random`, so a seed gives the same
values on every machine. Card numbers, IBANs and SSNs are built to be valid by construction
(checksums computed), phone numbers are drawn until libphonenumber's own ``is_valid_number``
accepts them, so the labels do not depend on the detectors under test.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import random
import string
from collections.abc import Callable

import phonenumbers

from hoopgw_masking.detectors import IBAN_LENGTHS, luhn_valid

# -- positives -------------------------------------------------------------------------------

_CARD_PREFIXES: tuple[tuple[str, int], ...] = (
    ("4", 16),
    ("4", 13),
    ("51", 16),
    ("55", 16),
    ("2221", 16),
    ("2720", 16),
)
_CARD_PREFIXES += (("34", 15), ("37", 15), ("6011", 16), ("65", 16), ("3528", 16), ("36", 14))
_WORDS = ("alpha", "delta", "mercury", "orbit", "harbor", "maple", "quartz", "summit", "willow")


def _luhn_complete(partial: str) -> str:
    for digit in "0123456789":
        if luhn_valid(partial + digit):
            return partial + digit
    raise AssertionError("unreachable")


def card(rng: random.Random) -> str:
    """A Luhn-valid card number of a real scheme, plain, spaced or dashed."""
    prefix, length = rng.choice(_CARD_PREFIXES)
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    number = _luhn_complete(body)
    style = rng.random()
    if style < 0.5 or length != 16:
        return number
    separator = " " if style < 0.75 else "-"
    return separator.join(number[i : i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random) -> str:
    """A mod-97-valid IBAN of a random registered country, compact or in groups of four."""
    country = rng.choice(sorted(IBAN_LENGTHS))
    bban = "".join(rng.choice(string.digits) for _ in range(IBAN_LENGTHS[country] - 4))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    check = 98 - int(numeric) % 97
    value = f"{country}{check:02d}{bban}"
    if rng.random() < 0.5:
        return value
    return " ".join(value[i : i + 4] for i in range(0, len(value), 4))


def ssn(rng: random.Random) -> str:
    """An SSN outside the never-issued ranges, dashed."""
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


_PHONE_REGIONS = ("US", "GB", "DE", "FR", "IN", "AU", "BR", "JP")
_FORMATS = (
    phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    phonenumbers.PhoneNumberFormat.E164,
    phonenumbers.PhoneNumberFormat.NATIONAL,
)


def phone(rng: random.Random, *, national_regions: tuple[str, ...] = ("US",)) -> str:
    """A phone number valid for libphonenumber: international for any of several countries,
    or national for one of ``national_regions``."""
    while True:
        region = rng.choice(_PHONE_REGIONS)
        example = phonenumbers.example_number_for_type(
            region,
            rng.choice(
                (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE)
            ),
        )
        if example is None:
            continue
        digits = str(example.national_number)
        keep = max(3, len(digits) - 4)
        national = digits[:keep] + "".join(rng.choice(string.digits) for _ in digits[keep:])
        number = phonenumbers.parse(f"+{example.country_code}{national}", None)
        if not phonenumbers.is_valid_number(number):
            continue
        fmt = rng.choice(_FORMATS)
        if fmt == phonenumbers.PhoneNumberFormat.NATIONAL and region not in national_regions:
            fmt = phonenumbers.PhoneNumberFormat.INTERNATIONAL
        return phonenumbers.format_number(number, fmt)


def email(rng: random.Random) -> str:
    """An address with dotted, plus-tagged or numbered local parts and sub-domains."""
    local = rng.choice(_WORDS) + rng.choice(("", ".", "_", "+")) + rng.choice(_WORDS)
    if rng.random() < 0.3:
        local += str(rng.randint(1, 999))
    domain = rng.choice(_WORDS) + rng.choice(("", "-mail"))
    if rng.random() < 0.3:
        domain = rng.choice(_WORDS) + "." + domain
    return f"{local.strip('.+_')}@{domain}.{rng.choice(('com', 'org', 'io', 'co.uk', 'de'))}"


def ipv4(rng: random.Random) -> str:
    """Any IPv4 address."""
    return str(ipaddress.IPv4Address(rng.getrandbits(32)))


def ipv6(rng: random.Random) -> str:
    """Any IPv6 address, compressed where possible."""
    value = rng.getrandbits(128)
    if rng.random() < 0.3:
        value = (value >> 96) << 96 | rng.getrandbits(16)  # zero groups, written as ::
    return str(ipaddress.IPv6Address(value))


def aws_key(rng: random.Random) -> str:
    """An AWS access key id."""
    return rng.choice(("AKIA", "ASIA")) + "".join(
        rng.choice(string.ascii_uppercase + "234567") for _ in range(16)
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def jwt(rng: random.Random) -> str:
    """A signed JSON Web Token (header, claims, signature)."""
    header = _b64(json.dumps({"alg": rng.choice(("HS256", "RS256")), "typ": "JWT"}).encode())
    claims = _b64(
        json.dumps({"sub": str(rng.getrandbits(40)), "iat": rng.getrandbits(31)}).encode()
    )
    return f"{header}.{claims}.{_b64(rng.randbytes(32))}"


def bearer(rng: random.Random) -> str:
    """An Authorization header with an opaque bearer token."""
    token = "".join(rng.choice(string.ascii_letters + string.digits + "-_~") for _ in range(40))
    if rng.random() < 0.3:
        token = f"{token[:20]}.{token[20:]}"
    return f"Bearer {token}"


POSITIVES: dict[str, Callable[[random.Random], str]] = {
    "email": email,
    "phone": phone,
    "ssn": ssn,
    "credit_card": card,
    "iban": iban,
    "ip": lambda rng: ipv4(rng) if rng.random() < 0.5 else ipv6(rng),
    "access_key": aws_key,
    "jwt": jwt,
    "bearer": bearer,
}
"""Generators of labelled positives, by entity."""

# -- neighbours ------------------------------------------------------------------------------

NEIGHBOURS = (*(c for c in string.punctuation if c != "@"), "_", " ", "\t", "\n", "x", "Q", "é")
"""Characters that can stand next to a value without being part of it (with exceptions per
entity, :data:`CONTINUES`): every ASCII punctuation mark, ``_``, spaces, letters."""
CONTINUES: dict[str, str] = {
    "ip": ":",  # "::" is IPv6 syntax: the address reads differently
    "access_key": string.ascii_letters + "_-",  # the key alphabets
    "jwt": "_-.",  # base64url and the segment separator
    "bearer": "._~+/-=",  # the token alphabet (RFC 6750 b64token)
}
"""Per entity, neighbours that continue the value (they are part of it, not next to it)."""


def adjacent(rng: random.Random, entity: str, value: str) -> str:
    """``value`` between one or two random neighbours on each side (``x_<value>_y``,
    ``--<value>--``), none of which continues the value."""
    choices = [c for c in NEIGHBOURS if c not in CONTINUES.get(entity, "")]
    left = "".join(rng.choice(choices) for _ in range(rng.randint(1, 2)))
    right = "".join(rng.choice(choices) for _ in range(rng.randint(1, 2)))
    return f"{left}{value}{right}"


# -- hard negatives --------------------------------------------------------------------------


def invalid_card(rng: random.Random) -> str:
    """A card-shaped number whose Luhn digit is wrong."""
    number = card(rng).replace(" ", "").replace("-", "")
    last = (int(number[-1]) + rng.randint(1, 9)) % 10
    return number[:-1] + str(last)


def order_number(rng: random.Random) -> str:
    """Order and invoice references."""
    year = rng.randint(2015, 2026)
    return rng.choice(
        (
            f"ORD-{year}-{rng.randint(0, 999999):06d}",
            f"INV{year}{rng.randint(0, 99999):05d}",
            f"#{rng.randint(10000, 9999999)}",
            f"PO {rng.randint(100, 999)}-{rng.randint(1000, 9999)}",
        )
    )


def timestamp(rng: random.Random) -> str:
    """Dates and times in common spellings."""
    y, mo, d = rng.randint(1990, 2030), rng.randint(1, 12), rng.randint(1, 28)
    h, mi, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    return rng.choice(
        (
            f"{y}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d}",
            f"{y}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{rng.randint(0, 999999):06d}Z",
            f"{mo:02d}/{d:02d}/{y}",
            f"{d:02d}.{mo:02d}.{y} {h:02d}:{mi:02d}",
            f"{h:02d}:{mi:02d}:{s:02d}",
            str(rng.randint(946684800, 1900000000)),
        )
    )


def digit_run(rng: random.Random) -> str:
    """Random digits of any length from 4 to 20 (no Luhn check computed)."""
    return "".join(rng.choice(string.digits) for _ in range(rng.randint(4, 20)))


def digit_groups(rng: random.Random) -> str:
    """Runs of 4 to 8 digit groups (2 to 5 digits each) separated by spaces or dashes, as in
    tables of codes and quantities: card numbers are looked for group by group inside them."""
    separator = rng.choice(" -")
    groups = (
        "".join(rng.choices(string.digits, k=rng.randint(2, 5))) for _ in range(rng.randint(4, 8))
    )
    return separator.join(groups)


def version_or_measure(rng: random.Random) -> str:
    """Version strings, amounts and measures."""
    return rng.choice(
        (
            f"v{rng.randint(0, 20)}.{rng.randint(0, 40)}.{rng.randint(0, 99)}",
            f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d} EUR",
            f"{rng.randint(1, 500)} x {rng.randint(1, 500)} mm",
            f"build {rng.randint(1000, 9999)}-{rng.randint(10, 99)}",
        )
    )


NEGATIVES: dict[str, Callable[[random.Random], str]] = {
    "invalid_card": invalid_card,
    "order_number": order_number,
    "timestamp": timestamp,
    "digit_run": digit_run,
    "digit_groups": digit_groups,
    "version_or_measure": version_or_measure,
}
"""Generators of hard negatives: values that must not be masked, by kind."""


# -- fake people -----------------------------------------------------------------------------


def people(count: int, *, seed: int = 4) -> list[dict[str, str]]:
    """``count`` fixed-seed fake people with names, addresses and every kind of identifier.

    Names and street addresses come from Faker; identifiers from the generators above, so each
    is valid for its entity. ``note`` embeds the email, phone and card in free text.
    """
    from faker import Faker  # a test dependency: only the tests and the benchmark call this

    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    out = []
    for index in range(count):
        person = {
            "full_name": fake.name(),
            "email": f"{index}.{email(rng)}",
            "phone": phone(rng),
            "ssn": ssn(rng),
            "card": card(rng),
            "iban": iban(rng),
            "street_address": fake.street_address(),
            "client_ip": ipv4(rng),
        }
        person["note"] = (
            f"Call {person['phone']} or write to {person['email']}; paid with {person['card']}."
        )
        out.append(person)
    return out
