"""The detectors of `redaction`: the patterns and checks that find personal details in a text.

Regular expressions for the codes (IBAN checked by mod 97, card numbers by Luhn), emails found from their
"@", URLs from "http"/"www.", and one per-request pattern for the names the caller passes. What they find
and why (no NER model) is in `redaction`'s docstring and decision record 0005.
"""

from __future__ import annotations

import functools
import re

# Speed (the target is < 1 ms per 10 KB): every pattern begins with a character class that is rare in
# prose (digits, capitals, "@", "http"), so the regex engine skips ordinary text without trying the
# alternatives at each position; a pass whose trigger (a digit, "@", "http"/"www.") is absent from the text
# is not run at all. Lookbehinds come after the first character, where they do not defeat that skip.
LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
"""An email's local part (up to 64 of these before the "@"), walked back from the "@"."""
DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
URL = re.compile(r"(?:https?://|www\.)[^\s<>\"'()\[\]]*[^\s<>\"'()\[\].,;:!?]")
UPPER = re.compile(  # codes that begin with a capital: IBAN (mod 97 checked after), UK and US postcodes
    r"[A-Z](?<![A-Za-z0-9][A-Z])(?:(?P<iban>[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}+(?: ?[A-Z0-9]{1,3})?+)"
    r"|(?P<uk>[A-Z]?\d[A-Z\d]? ?\d[A-Z]{2})|(?P<us>[A-Z] \d{5}(?:-\d{4})?+))(?![A-Za-z0-9])"
)
DIGITS = re.compile(  # codes that begin with a digit, "+" or "(": NL postcodes, phone and card numbers
    r"[\d+(](?<![\w+(][\d+(])(?:(?<=\d)(?P<nl>\d{3} ?[A-Z]{2})(?![\w]| ?\d)"
    r"|(?P<digits>(?=(?:[ .()-]{0,2}\d){6})(?:(?<=\+)\d{1,3}+[ .-]?+(?:\(\d{1,4}+\)[ .-]?+)?+\d++|(?<=\()\d{1,4}+\)[ .-]?+\d++"
    r"|(?<=\d)\d*+)(?:[ .-]\d{2,}+)*+(?!\w)))"
)
"""Two passes, not one alternation: each keeps its single leading class, which lets the engine skip
ordinary text (one alternation of both measured 3x slower on dense text)."""
GROUP_KIND = {"iban": "iban", "uk": "postcode", "us": "postcode", "nl": "postcode", "digits": "digits"}
DATE = re.compile(r"\d{4}[-.]\d{1,2}[-.]\d{1,2}|\d{1,2}[-.]\d{1,2}[-.]\d{2,4}|\d{1,2}[.:]\d{2}")
_WORDS_TEXT = (
    "will hope grace mark may june april august rose faith joy bill sue pat art dawn summer rich frank "
    "sky river amber ruby pearl holly ivy iris lily daisy violet hazel robin jay drew dean chase hunter "
    "gene max ray rod wade lane reed gay case young long white brown green black king page cook "
    "price hill wood stone bell ward shepherd"
)
"""Names that are also common words: matched only as the caller wrote them (or in capitals); any other
name (part) is matched in any case, "sarah" as "Sarah"."""
WORDS = frozenset(_WORDS_TEXT.split())
_PARTICLES = frozenset(
    {"de", "da", "di", "del", "van", "der", "den", "von", "la", "le", "el", "al", "bin", "mc"}
)
CODE_KINDS = frozenset({"iban", "card", "phone", "postcode"})


_LUHN_DOUBLE = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


_LUHN_DOUBLED = str.maketrans("0123456789", "0246813579")
"""A digit doubled, its digits summed (Luhn), as a digit."""


def luhn(digits: str) -> bool:
    if digits.isascii():  # the sums in C: a digit's byte is 48 + its value
        doubled = digits[-2::-2].translate(_LUHN_DOUBLED)
        return (sum(digits[-1::-2].encode()) + sum(doubled.encode()) - 48 * len(digits)) % 10 == 0
    odd = sum(map(int, digits[-1::-2]))  # other scripts' digits (\d matches them)
    even = sum(_LUHN_DOUBLE[int(d)] for d in digits[-2::-2])
    return (odd + even) % 10 == 0


_IBAN_DIGITS = str.maketrans({chr(c): str(c - 55) for c in range(ord("A"), ord("Z") + 1)} | {" ": None})
SEPARATORS = str.maketrans(dict.fromkeys(" \t\n().-+"))


def iban_ok(value: str) -> bool:
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    return int((compact[4:] + compact[:4]).translate(_IBAN_DIGITS)) % 97 == 1


NAMESTABLE = tuple[re.Pattern[str] | None, re.Pattern[str] | None, dict[str, int], frozenset[str]]


@functools.lru_cache(maxsize=256)
def names_pattern(names: tuple[str, ...]) -> NAMESTABLE:
    """One pattern for every name and name part (on the text as written), one for their lower-cased forms
    (on the lower-cased text), and which person (index) each form means (cached: the MVP sends the same
    client's names again and again; read-only)."""
    person: dict[str, int] = {}
    exact: list[str] = []
    folded: list[str] = []
    for index, name in enumerate(names):
        full = " ".join(name.split())
        if not full:
            continue
        person.setdefault(full.lower(), index)
        if " " not in full:  # one word ("Will", "Hope"): as written or in capitals, not any word
            exact.extend({full, full.upper()})
            continue
        folded.append(full)
        for part in full.split(" "):
            if len(part) >= 2 and part.lower() not in _PARTICLES:
                person.setdefault(part.lower(), index)
                exact.extend({part, part.upper()})
    if not person:
        return None, None, person, frozenset()
    words = sorted({*folded, *exact}, key=len, reverse=True)
    firsts = sorted({c for w in words for c in (w[0].lower(), w[0].upper())})
    alternatives = "|".join(
        rf"(?<=[{re.escape(w[0].lower())}{re.escape(w[0].upper())}]){re.escape(w[1:])}" for w in words
    )
    # The first letter as a class (the engine skips to it), the rest without case; `_person_of` then
    # holds name parts and one-word names to their written case (or capitals).
    first = "".join(re.escape(c) for c in firsts)
    pattern = re.compile(rf"[{first}](?<!\w[{first}])(?i:{alternatives})(?!\w)")
    # The lower-cased forms, longest first (at one position the longest that ends a word wins); what
    # precedes a match is checked by the caller (a lookbehind first would cost the engine its skip).
    forms = "|".join(re.escape(form) for form in sorted(person, key=len, reverse=True))
    return pattern, re.compile(rf"(?:{forms})(?!\w)"), person, frozenset(exact)


def is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"
