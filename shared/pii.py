"""Encryption at rest and masking for borrower PII (national id, phone, name)."""

from __future__ import annotations

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
