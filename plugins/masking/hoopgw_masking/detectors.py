r"""Validating detectors: one per entity, each a precompiled candidate pattern plus a check.

A bare regular expression finds too much (every 16-digit run looks like a card number) and too
little (a phone number has dozens of spellings). Each detector therefore pairs a permissive
candidate pattern with a validator that knows the entity's structure: the Luhn checksum for
payment cards, ISO 7064 mod-97 for IBANs, the Social Security Administration's never-issued
ranges for SSNs, the numbering plans of :mod:`phonenumbers` for phones, the address grammar for
IPv4 and IPv6, a decodable JSON header for JWTs.

Built-in patterns are ASCII-only (``re.ASCII``: ``\d`` is ``[0-9]``, ``\w`` is
``[A-Za-z0-9_]``), which the regular expression engine scans about twice as fast as Unicode
classes; every digit a checksum reads is then an ASCII digit. They begin with a lookahead or a
character class rather than a lookbehind, and use possessive quantifiers where backtracking
cannot find another match, for the same reason.

Built-in patterns never match the NUL character: the engine scans a whole batch of values
joined by NUL at once, so no match may run from one value into the next. Custom patterns run on
one value at a time (:attr:`Detector.per_value`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping

import attrs
import phonenumbers

Span = tuple[int, int]
Validator = Callable[["re.Match[str]"], Span | None]


@attrs.frozen(kw_only=True)
class Detector:
    """Finds one entity in text."""

    entity: str
    """Entity name, as written in the config (``email``, ``credit_card``, ...)."""
    pattern: re.Pattern[str]
    """Candidate pattern; must not match NUL."""
    validate: Validator
    """Returns the span to mask (often the whole match) or ``None`` to reject the candidate."""
    digits_only: bool = False
    """Whether the entity can be found in a bare number (a numeric column, a JSON number)."""
    per_value: bool = False
    """Whether the pattern must see one value at a time (custom patterns: they may anchor with
    ``^``/``$`` or match NUL, which joins the values of a batch)."""
    exact: bool = False
    """Whether the pattern alone decides: every match is the entity and is masked whole."""
    triggers: tuple[str, ...] = ()
    """Substrings of which every match holds one; when none is in the text, the pattern is
    not run. Empty: always run. Single characters are looked for in one pass (a text
    without any digit skips every digit detector for the price of one scan in C)."""


DIGITS = tuple("0123456789")
"""The triggers of detectors whose matches hold a digit."""


def _whole(match: re.Match[str]) -> Span:
    return match.span()


# -- email -----------------------------------------------------------------------------------

# The local part: dot-separated atoms (no leading, trailing or doubled dot).
# The atoms are possessive: no shorter atom can be followed by "." or "@" instead.
# The domain ends before a letter or digit if it can (john@example.com.GB82WEST...: the IBAN
# after the address stays whole), else before a letter (john@example.com1).
_DOMAIN = r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}"
_EMAIL = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9_%+-]*+(?:\.[A-Za-z0-9_%+-]++)*+"
    rf"@(?:{_DOMAIN}(?![A-Za-z0-9])|{_DOMAIN}(?![A-Za-z]))",
    re.ASCII,
)


# -- phone -----------------------------------------------------------------------------------

# The first character is consumed by a class (the engine skips other characters in C) and
# each branch re-reads it with a lookbehind.
_PHONE = re.compile(
    r"[0-9+(](?<!\d[0-9+(])(?<!\d[/:.\-][0-9+(])"
    r"(?:"
    r"(?<=\+)\d{1,3}(?:[ .\-]?(?:\(\d{1,5}\)|\d{1,5})){2,6}"  # +44 20 7946 0958, +1-212-555-0100
    r"|(?<=0)(?:0|11)[ .\-]?\d{1,3}(?:[ .\-]?(?:\(\d{1,5}\)|\d{1,5})){2,6}"  # 001-212-555-0100
    r"|(?<=\()\d{2,5}\)[ .\-]?\d{2,5}(?:[ .\-]\d{2,5}){0,2}"  # (212) 555-0100
    r"|(?<=\d)\d{1,4}[ .\-]\d{2,5}(?:[ .\-]\d{2,5}){1,2}"  # 212-555-0100, 020 7946 0958
    r")"
    r"(?:[ ]?(?:x|ext\.?|\#)[ ]?\d{1,6})?"
    r"(?!\d|[/:.\-]\d)",
    re.ASCII,
)
_DATE_LIKE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}$", re.ASCII)
_PHONE_TYPES = (
    "fixed_line",
    "mobile",
    "toll_free",
    "premium_rate",
    "shared_cost",
    "personal_number",
    "voip",
    "pager",
    "uan",
    "voicemail",
)
_EXTENSION = re.compile(r"[ ]?(?:x|ext\.?|\#)[ ]?\d{1,6}$", re.ASCII)


class _NumberingPlan:
    """One region's numbering plan from libphonenumber's metadata, compiled once.

    ``phonenumbers.is_valid_number`` costs tens of microseconds; matching the same metadata's
    national-number patterns (the union of every number type) with one compiled regex costs one.
    """

    def __init__(self, metadata: object) -> None:
        patterns = []
        for name in _PHONE_TYPES:
            desc = getattr(metadata, name, None)
            pattern = getattr(desc, "national_number_pattern", None)
            if pattern:
                patterns.append(f"(?:{pattern})")
        self.numbers = re.compile("|".join(patterns)) if patterns else None
        prefix = getattr(metadata, "national_prefix_for_parsing", None)
        self.prefix = re.compile(prefix) if prefix else None

    def valid(self, national: str) -> bool:
        if self.numbers is None:
            return False
        if self.numbers.fullmatch(national):
            return True
        if self.prefix is not None:
            match = self.prefix.match(national)
            if match and match.end() and self.numbers.fullmatch(national[match.end() :]):
                return True
        return False


_PLANS: dict[str, _NumberingPlan | None] = {}


def _plan(region: str) -> _NumberingPlan | None:
    if region not in _PLANS:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        _PLANS[region] = None if metadata is None else _NumberingPlan(metadata)
    return _PLANS[region]


_CODE_PLANS: dict[int, list[_NumberingPlan]] = {}


def _plans_for_code(code: int) -> list[_NumberingPlan]:
    if code not in _CODE_PLANS:
        regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(code, ())
        plans = [p for p in (_plan(r) for r in regions if r != "001") if p is not None]
        if "001" in regions:
            metadata = phonenumbers.PhoneMetadata.metadata_for_nongeo_region(code)
            if metadata is not None:
                plans.append(_NumberingPlan(metadata))
        _CODE_PLANS[code] = plans
        numbers = [f"(?:{p.numbers.pattern})" for p in plans if p.numbers is not None]
        _CODE_NUMBERS[code] = re.compile("|".join(numbers)) if numbers else None
    return _CODE_PLANS[code]


_CODE_NUMBERS: dict[int, re.Pattern[str] | None] = {}
"""Per country calling code, the national-number patterns of all its regions in one regex."""


def _valid_for_code(code: int, national: str) -> bool:
    plans = _plans_for_code(code)
    # One regex for the common case (no national prefix to strip), then region by region.
    numbers = _CODE_NUMBERS[code]
    if numbers is not None and numbers.fullmatch(national):
        return True
    return any(p.valid(national) for p in plans)


_NOT_DIGITS = bytes(c for c in range(256) if not 48 <= c <= 57)


def _digits(text: str) -> str:
    """The ASCII digits of ``text``, in order."""
    return text.encode("ascii", "ignore").translate(None, _NOT_DIGITS).decode("ascii")


def valid_phone(text: str, regions: Iterable[str]) -> bool:
    """Whether ``text`` is a valid phone number: international (``+CC``, ``00CC``, ``011CC``)
    against its country's plan, national against each of ``regions`` in turn."""
    if "x" in text or "#" in text:  # an extension: x 12, ext. 12, # 12
        text = _EXTENSION.sub("", text)
    international = text.startswith("+")
    digits = _digits(text)
    if not international and text.startswith("011"):
        international, digits = True, digits[3:]
    elif not international and text.startswith("00"):
        international, digits = True, digits[2:]
    if international:
        for size in (1, 2, 3):
            code = int(digits[:size] or 0)
            if code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
                return _valid_for_code(code, digits[size:])
        return False
    for region in regions:
        plan = _plan(region)
        if plan is not None and plan.valid(digits):
            return True
    return False


def check_regions(regions: Iterable[str]) -> str | None:
    """An error message for unknown region codes, or ``None``."""
    unknown = [r for r in regions if phonenumbers.PhoneMetadata.metadata_for_region(r) is None]
    return f"unknown phone regions: {', '.join(unknown)}" if unknown else None


def phone_validator(regions: Iterable[str]) -> Validator:
    """A phone validator: international numbers are checked against their own country's plan,
    national ones against each of ``regions`` (ISO 3166 codes such as ``US``, ``GB``) in turn."""
    regions = tuple(regions)

    def validate(match: re.Match[str]) -> Span | None:
        text = match.group()
        if len(_digits(text)) < 7 or _DATE_LIKE.match(text):
            return None
        if valid_phone(text, regions):
            return match.span()
        if text.startswith("+") and valid_phone(text[1:], regions):
            # A national number after a plus that is not part of it ("+212-555-0143").
            return match.start() + 1, match.end()
        return None

    return validate


# -- US social security number ---------------------------------------------------------------

# Never issued: area 000, 666 and 900-999; group 00; serial 0000 (SSA, "SSN randomization");
# nor the numbers published in advertising (078-05-1120, 219-09-9999) or 123-45-6789.
# Any character but a digit, or a digit group (1-536-22-1234: a longer number), may stand next
# to one.
_SSN = re.compile(
    r"\d(?<!\d\d)(?<!\d[ \-]\d)"
    r"(?!(?<=0)00|(?<=6)66|(?<=9)\d\d|(?<=0)78.05.1120|(?<=2)19.09.9999|(?<=1)23.45.6789)"
    r"\d{2}([- ])(?!00)\d{2}\1(?!0000)\d{4}(?!\d|[ \-]\d)",
    re.ASCII,
)


# -- payment cards ---------------------------------------------------------------------------

# Patterns start with a character class and check what precedes it just after (instead of a
# lookbehind first): the regex engine then skips non-candidate characters much faster.
# A candidate is a whole run of digits, spaces and dashes (possessive: it is never cut); the
# validator looks for card numbers inside it group by group, so that digits or groups next to a
# card (``1234-4111 1111 1111 1111``, ``4111111111111111 2``) do not hide it.
_CARD = re.compile(r"\d(?<!\d\d)(?<!\d[ \-]\d)(?:[ \-]?\d){11,}+", re.ASCII)
_CARD_GROUP = re.compile(r"\d+", re.ASCII)
# The layouts card numbers are written in, as group sizes (one character each: "4" is a group
# of four, "<" of twelve, "C" of nineteen): one group of 12-19 digits, groups of four with a
# last group of one to four, Amex 4-6-5 and Diners 4-6-4.
_CARD_LAYOUT = re.compile(r"[<=>?@ABC]|444[1-4]|4444[1-3]|465|464")
# (prefix pattern, allowed lengths) per scheme: Visa, Mastercard, Amex, Discover, JCB, Diners,
# UnionPay, Maestro.
_CARD_SCHEMES = re.compile(
    r"4\d{12}(?:\d{3}){0,2}"
    r"|(?:5[1-5]\d\d|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720)\d{12}"
    r"|3[47]\d{13}"
    r"|(?:6011|65\d\d|64[4-9]\d)\d{12,15}"
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"
    r"|3(?:0[0-5]|[689]\d)\d{11,16}"
    r"|62\d{14,17}"
    r"|(?:2131|1800)\d{11}"
    r"|(?:5018|5020|5038|5893|6304|6759|676[1-3]|0604)\d{8,15}",
    re.ASCII,
)
# Luhn: the digits' ASCII codes summed, with every second digit from the right first doubled
# (its digit sum: 0 2 4 6 8 1 3 5 7 9) by a translation table.
_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) checksum of a string of ASCII digits."""
    kept = digits[-1::-2].encode("ascii")
    doubled = digits[-2::-2].translate(_DOUBLED).encode("ascii")
    return (sum(kept) + sum(doubled) - 48 * len(digits)) % 10 == 0


def valid_card_digits(digits: str) -> bool:
    """Whether a digit string is a payment card number: a known scheme's prefix and length,
    and the Luhn checksum."""
    return bool(_CARD_SCHEMES.fullmatch(digits)) and luhn_valid(digits)


def _card_text(text: str) -> bool:
    if " " in text and "-" in text:
        return False  # mixed separators: not one number
    return valid_card_digits(text.replace(" ", "").replace("-", ""))


def _card(match: re.Match[str]) -> Span | None:
    """The whole candidate if it is one card number; else the span from the first to the last
    card number inside it made of whole groups in a card's layout (what lies between is masked
    too)."""
    text = match.group()
    start = match.start()
    if start and match.string[start - 1] == "+" and valid_phone("+" + text, ()):
        return None  # an international phone number (+49 1512 3452646): the phone detector's
    if _card_text(text):
        return match.span()
    groups = [m.span() for m in _CARD_GROUP.finditer(text)]
    sizes = "".join(chr(48 + min(e - s, 20)) for s, e in groups)  # group sizes, one char each
    found: list[Span] = []
    for first, (start, _) in enumerate(groups):
        for last in range(first, min(first + 5, len(groups))):
            if _CARD_LAYOUT.fullmatch(sizes, first, last + 1) and _card_text(
                text[start : groups[last][1]]
            ):
                found.append((start, groups[last][1]))
    if not found:
        return None
    offset = match.start()
    return offset + min(s for s, _ in found), offset + max(e for _, e in found)


# -- IBAN ------------------------------------------------------------------------------------

_IBAN = re.compile(
    r"[A-Z][A-Z]\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?"
    r"(?![A-Z0-9])",
    re.ASCII,
)
# Lengths per country (ISO 13616 registry, SWIFT release 2024).
IBAN_LENGTHS: Mapping[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28,
    "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23,
    "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20,
    "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24,
    "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28, "TL": 23, "TN": 24,
    "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def valid_iban(compact: str) -> bool:
    """ISO 13616: the country's length and the ISO 7064 mod-97-10 check."""
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is not None and len(compact) != expected:
        return False
    if expected is None and not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _iban(match: re.Match[str]) -> Span | None:
    text = match.group()
    compact = text.replace(" ", "")
    if valid_iban(compact):
        return match.span()
    # Characters run on after the IBAN (GB82WEST12345698765432X0): its country's length.
    expected = IBAN_LENGTHS.get(compact[:2])
    if expected is None or len(compact) <= expected or not valid_iban(compact[:expected]):
        return None
    end = 0
    for kept, char in enumerate(c for c in text if c != " "):
        if kept == expected:
            break
        end = text.index(char, end) + 1
    return match.start(), match.start() + end


# -- IP addresses ----------------------------------------------------------------------------

_IPV4 = re.compile(r"\d(?<!\d\d)(?<!\d\.\d)\d{0,2}(?:\.\d{1,3}){3}(?!\d|\.\d)", re.ASCII)


def _ipv4(match: re.Match[str]) -> Span | None:
    for octet in match.group().split("."):
        if int(octet) > 255 or (len(octet) > 1 and octet[0] == "0"):
            return None
    return match.span()


_IPV6 = re.compile(
    r"(?=[0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}"
    r"(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![0-9A-Fa-f:])",
    re.ASCII,
)


def _ipv6(match: re.Match[str]) -> Span | None:
    text = match.group()
    if not any(c.isalnum() for c in text):
        return None
    start, end = match.span()
    # A colon of the surrounding text (":2001:db8::1:") is not part of the address.
    if text.startswith(":") and not text.startswith("::"):
        start += 1
    if text.endswith(":") and not text.endswith("::"):
        end -= 1
    try:
        ipaddress.IPv6Address(match.string[start:end])
    except ValueError:
        return None
    return start, end


# -- secrets ---------------------------------------------------------------------------------

# The first character is a class and each branch re-reads it with a lookbehind, so that the
# engine skips every other character in C; no trigger check is needed.
_ACCESS_KEY = re.compile(
    r"[Agxsr](?:"
    r"(?<=A)(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|ROA|NPA|NVA|PKA)[A-Z0-9]{16}"  # AWS
    r"|(?<=A)Iza[0-9A-Za-z_\-]{35}"  # Google API key
    r"|(?<=g)h[pousr]_[A-Za-z0-9]{36,255}|(?<=g)ithub_pat_[A-Za-z0-9_]{22,255}"  # GitHub
    r"|(?<=x)ox[abposr]-[A-Za-z0-9\-]{10,}"  # Slack
    r"|(?<=[sr])k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|(?<=A)ccountKey=[A-Za-z0-9+/]{80,}={0,2}"  # Azure storage
    r")",
    re.ASCII,
)
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----"
    r"(?:[^\x00]*?-----END [A-Z0-9 ]*PRIVATE KEY[A-Z ]*-----|[A-Za-z0-9+/=\s:,.\-]*)"
)
_JWT = re.compile(r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*", re.ASCII)
_BEARER = re.compile(r"(?i:bearer)[ \t]+([A-Za-z0-9._~+/\-]{16,}=*)", re.ASCII)
# "Bearer", "bearer", "BEARER": the spellings in use (a rarer mix of cases is not scanned).
_BEARER_TRIGGERS = ("earer", "EARER")


def _jwt(match: re.Match[str]) -> Span | None:
    header = match.group().partition(".")[0]
    try:
        decoded = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    except (binascii.Error, ValueError):
        return None
    return match.span() if isinstance(decoded, dict) else None


def _bearer(match: re.Match[str]) -> Span:
    start, end = match.span(1)
    # A token may contain dots, but one that ends a sentence is punctuation.
    while end > start and match.string[end - 1] == ".":
        end -= 1
    return start, end


# -- the catalogue ---------------------------------------------------------------------------

BUILTIN_ENTITIES = (
    "email",
    "phone",
    "ssn",
    "credit_card",
    "iban",
    "ip",
    "access_key",
    "private_key",
    "jwt",
    "bearer",
)
"""Every built-in entity, in the order overlapping matches are preferred."""


def builtin_detectors(
    entities: Iterable[str], *, phone_regions: Iterable[str] = ("US",)
) -> list[Detector]:
    """The detectors of the named built-in entities (``ip`` stands for IPv4 and IPv6)."""
    table: dict[str, list[Detector]] = {
        "private_key": [
            Detector(
                entity="private_key",
                pattern=_PRIVATE_KEY,
                validate=_whole,
                exact=True,
                triggers=("PRIVATE",),
            )
        ],
        "jwt": [Detector(entity="jwt", pattern=_JWT, validate=_jwt, triggers=("eyJ",))],
        "bearer": [
            Detector(entity="bearer", pattern=_BEARER, validate=_bearer, triggers=_BEARER_TRIGGERS)
        ],
        "access_key": [
            Detector(
                entity="access_key",
                pattern=_ACCESS_KEY,
                validate=_whole,
                exact=True,
            )
        ],
        "email": [
            Detector(entity="email", pattern=_EMAIL, validate=_whole, exact=True, triggers=("@",))
        ],
        "iban": [Detector(entity="iban", pattern=_IBAN, validate=_iban, triggers=DIGITS)],
        "credit_card": [
            Detector(
                entity="credit_card",
                pattern=_CARD,
                validate=_card,
                digits_only=True,
                triggers=DIGITS,
            )
        ],
        "ssn": [Detector(entity="ssn", pattern=_SSN, validate=_whole, exact=True, triggers=DIGITS)],
        "ip": [
            Detector(entity="ip", pattern=_IPV4, validate=_ipv4, triggers=(".",)),
            Detector(entity="ip", pattern=_IPV6, validate=_ipv6, triggers=(":",)),
        ],
        "phone": [
            Detector(
                entity="phone",
                pattern=_PHONE,
                validate=phone_validator(phone_regions),
                triggers=DIGITS,
            )
        ],
    }
    wanted = set(entities)
    return [d for name in table if name in wanted for d in table[name]]


def regex_detector(entity: str, pattern: str) -> Detector:
    """A custom entity found by a regular expression alone.

    :raises ValueError: if the pattern does not compile or matches the empty string.
    """
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    if compiled.fullmatch(""):
        raise ValueError("the regular expression matches the empty string")
    return Detector(entity=entity, pattern=compiled, validate=_nonempty, per_value=True)


def _nonempty(match: re.Match[str]) -> Span | None:
    return match.span() if match.end() > match.start() else None


def deny_list_detector(words: Iterable[str], *, entity: str = "deny_list") -> Detector:
    """Whole words (case-insensitive) that must never be shown."""
    alternatives = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
    # Letters and digits continue a word; "_" and other punctuation do not.
    pattern = re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])", re.IGNORECASE)
    return Detector(entity=entity, pattern=pattern, validate=_whole, exact=True)
