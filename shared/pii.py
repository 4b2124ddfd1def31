"""Encryption at rest and masking for borrower PII (national id, phone, name).

`mask_pii` is the one place that recognises a national id or a phone number in free text.
The log formatter runs every line through it, and the note fields of the APIs run every
note through it before it is stored, so a number an agent types into a note is masked at
rest, in responses and in logs alike.
"""

from __future__ import annotations

import base64
import os
import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# A value encrypted with AES-256-GCM starts with this; anything else is a Fernet token.
GCM_PREFIX = "gcm1:"
_NONCE_BYTES = 12


class PiiCipher:
    """Borrower PII at rest. New values are sealed with AES-256-GCM (cryptography's AEAD),
    under a key derived from `PII_KEY` with HKDF, so the setting is unchanged; values written
    before with Fernet (the same key) stay readable. GCM because a loan import seals three
    fields per loan: Fernet took 16 µs a field (a new CBC cipher object, padding and an HMAC
    each time), a quarter of the import API's CPU; GCM takes 3 µs. Each value has its own
    random 96-bit nonce: safe for billions of values under one key."""

    def __init__(self, key: str) -> None:
        self._fernet = Fernet(key.encode())
        derived = HKDF(
            algorithm=SHA256(), length=32, salt=None, info=b"huifang pii aes-256-gcm v1"
        ).derive(base64.urlsafe_b64decode(key.encode()))
        self._gcm = AESGCM(derived)

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._gcm.encrypt(nonce, plaintext.encode(), None)
        return GCM_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def encrypt_many(self, plaintexts: Sequence[str]) -> list[str]:
        """Each of `plaintexts` sealed on its own (its own nonce)."""
        return [self.encrypt(text) for text in plaintexts]

    def decrypt(self, token: str) -> str:
        """The plaintext; InvalidToken when the value was altered or sealed under another
        key, whichever format it is in."""
        if not token.startswith(GCM_PREFIX):
            return self._fernet.decrypt(token.encode()).decode()
        try:
            raw = base64.urlsafe_b64decode(token[len(GCM_PREFIX) :].encode())
            nonce, sealed = raw[:_NONCE_BYTES], raw[_NONCE_BYTES:]
            return self._gcm.decrypt(nonce, sealed, None).decode()
        except (InvalidTag, ValueError) as exc:
            raise InvalidToken from exc


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

# A number is a run of digits joined by what people type between digit groups: white space
# (line breaks too), hyphens and dashes, slashes, underscores, dots, brackets and plus signs,
# at most three of them at a time (`138 - 1234`). A run of nine digits or more is a phone, a
# national id, a card or an account number: whatever its grouping, only its last four digits
# are kept. Dates (`2026-11-30`, 8 digits) and amounts (`12000.00`, 7) stay readable.
MIN_DIGITS = 9
VISIBLE_DIGITS = 4
_SEPARATORS = r"[\s\-‐‑‒–—/_.()+]"
# A national id ends in a check character that may be `X`.
_NUMBER = re.compile(rf"\+?[0-9]+(?:{_SEPARATORS}{{1,3}}[0-9]+)*(?:[Xx](?![0-9A-Za-z]))?")
# What must not be taken for a number: a UUID or a hex digest (request, event and visit
# ids in every log line) whose digits happen to run long. Only with a letter in it: an id
# made of digits alone is masked like any other number.
_HEX_ID = re.compile(
    r"(?<![0-9A-Za-z])(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
    r"[0-9a-fA-F]{12}|[0-9a-fA-F]{32}|[0-9a-fA-F]{40}|[0-9a-fA-F]{64})(?![0-9A-Za-z])"
)
# A date with its time (`2026-11-30 14:05:09.123456+00:00`, as Python prints a datetime):
# the space-joined hour, or the fraction of a second and its offset, would otherwise make a
# run of ten digits of it.
_DATETIME = re.compile(
    r"(?<![0-9])[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}"
    r"(?::[0-9]{2}(?:\.[0-9]{1,9})?)?(?:Z|[+-][0-9]{2}:?[0-9]{2})?"
)
# The 18 characters of a resident id: 17 digits and a check digit that may be `X`.
_ID_DIGITS = 17


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    """One character in, at most one out: any Unicode decimal digit (full-width `１`,
    Arabic-Indic `١`, ...) becomes its ASCII digit; compatibility forms that fold to a single
    character (full-width `＋`, `－`, `Ｘ`, the ideographic space) fold to it; invisible
    format characters (zero-width space, soft hyphen, joiners, BOM) vanish, so that they
    cannot split a number the eye reads as one."""
    digit = unicodedata.decimal(char, None)
    if digit is not None:
        return str(digit)
    if unicodedata.category(char) == "Cf":
        return ""
    folded = unicodedata.normalize("NFKC", char)
    return folded if len(folded) == 1 else char


def _fold(text: str) -> tuple[str, list[int] | None]:
    """The folded text and, for each of its characters, its index in `text` (None when
    folding changed no position: ASCII text)."""
    if text.isascii():
        return text, None
    chars: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = _fold_char(char)
        if folded:
            chars.append(folded)
            origin.append(index)
    return "".join(chars), origin


def _masked(number: str) -> tuple[str, int] | None:
    """The masked number and how many characters of `number` it replaces (a trailing `X`
    belongs to it only as a resident id's check digit); None if it is too short to hide."""
    digits = [c for c in number if c.isdigit()]
    if len(digits) < MIN_DIGITS:
        return None
    length = len(number)
    if number[-1] in "Xx":
        if len(digits) == _ID_DIGITS:
            digits.append(number[-1])
        else:
            length -= 1
    return "*" * (len(digits) - VISIBLE_DIGITS) + "".join(digits[-VISIBLE_DIGITS:]), length


def _blank(text: str, pattern: re.Pattern[str], *, unless_all_digits: bool = False) -> str:
    """`text` with what `pattern` matches overwritten (same length, no digits), so that it
    can no longer join a number; with `unless_all_digits`, only matches with a letter."""

    def overwrite(match: re.Match[str]) -> str:
        found = match.group(0)
        if unless_all_digits and not any(c.isalpha() for c in found):
            return found
        return "#" * len(found)

    return pattern.sub(overwrite, text)


def mask_pii(text: str) -> str:
    """Mask every run of nine or more digits in `text` (national ids, phones, cards),
    keeping its last four digits: `电话 +86 138-1234-5678` -> `电话 *********5678`.
    Idempotent."""
    folded, origin = _fold(text)
    if sum(c.isdigit() for c in folded) < MIN_DIGITS:
        return text  # the common case, and cheap: no number to find
    searched = _blank(_blank(folded, _HEX_ID, unless_all_digits=True), _DATETIME)
    spans: list[tuple[int, int, str]] = []
    for match in _NUMBER.finditer(searched):
        masked = _masked(match.group(0))
        if masked is None:
            continue
        replacement, length = masked
        start, end = match.start(), match.start() + length
        if origin is not None:
            start, end = origin[start], origin[end - 1] + 1
        spans.append((start, end, replacement))
    if not spans:
        return text
    out: list[str] = []
    position = 0
    for start, end, replacement in spans:
        out += [text[position:start], replacement]
        position = end
    out.append(text[position:])
    return "".join(out)
