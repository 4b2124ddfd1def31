"""Encryption at rest and masking for borrower PII (national id, phone, name).

`mask_pii` is the one place that recognises a national id or a phone number in free text.
The log formatter runs every line through it, and the note fields of the APIs run every
note through it before it is stored, so a number an agent types into a note is masked at
rest, in responses and in logs alike.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from cryptography.fernet import Fernet


class PiiCipher:
    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()


def mask_tail(value: str, visible: int = 4) -> str:
    """`110101199003074512` -> `**************4512`; short values are fully masked."""
    if len(value) <= visible:
        return "*" * len(value)
    return "*" * (len(value) - visible) + value[-visible:]


def mask_name(name: str) -> str:
    """Keep the first character (the family name in Chinese order): `张伟` -> `张*`."""
    if not name:
        return name
    return name[0] + "*" * max(len(name) - 1, 1)


# --- PII in free text ---------------------------------------------------------------------

# What people type between digit groups: spaces (also full-width, folded below), hyphens,
# dots and the dashes a phone keyboard offers.
_SEP = r"[ \t.\-‐‑‒–—]{0,2}"
# Not a digit before or after: a longer run of digits is something else (an account number).
_NATIONAL_ID = re.compile(
    rf"(?<![0-9])[0-9]{{6}}{_SEP}[0-9]{{4}}{_SEP}[0-9]{{4}}{_SEP}[0-9]{{3}}[0-9Xx](?![0-9])"
)
# A mainland mobile (1[3-9]x, 11 digits in 3-4-4), optionally with the +86 / 0086 prefix.
_MOBILE = re.compile(
    rf"(?<![0-9])(?:(?:\+|00)86{_SEP})?1[3-9][0-9]{_SEP}[0-9]{{4}}{_SEP}[0-9]{{4}}(?![0-9])"
)
# A landline with its area code (010-12345678, 0755 8888 8888 style).
_LANDLINE = re.compile(rf"(?<![0-9])0[1-9][0-9]{{1,2}}{_SEP}[0-9]{{3,4}}{_SEP}[0-9]{{4}}(?![0-9])")
# A first-generation 15-digit id, or a bank card number (16 to 19 digits).
_LONG_NUMBER = re.compile(r"(?<![0-9])[0-9]{15,19}(?![0-9])")


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    """One character in, one character out: any Unicode decimal digit (full-width `１`,
    Arabic-Indic `١`, ...) becomes its ASCII digit, and compatibility forms that fold to a
    single character (full-width `＋`, `－`, `Ｘ`, the ideographic space) fold to it."""
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    folded = unicodedata.normalize("NFKC", char)
    return folded if len(folded) == 1 else char


def _fold(text: str) -> str:
    # Same length as `text`, so a match in the folded text is a span of the original.
    return text if text.isascii() else "".join(_fold_char(c) for c in text)


def _masked(match: re.Match[str]) -> str:
    digits = [c for c in match.group(0) if c in "0123456789Xx"]
    return "*" * (len(digits) - 4) + "".join(digits[-4:])


def mask_pii(text: str) -> str:
    """Mask every national id, phone and card number in `text`, keeping the last four digits:
    `电话 +86 138-1234-5678` -> `电话 *********5678`. Idempotent."""
    folded = _fold(text)
    spans: list[tuple[int, int, str]] = []
    for pattern in (_NATIONAL_ID, _MOBILE, _LANDLINE, _LONG_NUMBER):
        for match in pattern.finditer(folded):
            start, end = match.span()
            if all(end <= s or start >= e for s, e, _ in spans):
                spans.append((start, end, _masked(match)))
    if not spans:
        return text
    out: list[str] = []
    position = 0
    for start, end, replacement in sorted(spans):
        out += [text[position:start], replacement]
        position = end
    out.append(text[position:])
    return "".join(out)
