"""PII encrypted a batch at a time: Fernet tokens that Fernet itself reads."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet, InvalidToken

from shared.pii import PiiCipher

# Empty, one block, exactly one and two blocks, three blocks of UTF-8, a long name.
PLAINTEXTS = ["", "13812345678", "a" * 15, "a" * 16, "110101199003074512", "王建国" * 6, "张" * 128]


def test_fernet_reads_a_batch_and_every_token_has_its_own_iv() -> None:
    key = Fernet.generate_key()
    cipher = PiiCipher(key.decode())
    tokens = cipher.encrypt_many(PLAINTEXTS * 2)
    assert [Fernet(key).decrypt(token).decode() for token in tokens] == PLAINTEXTS * 2
    assert [cipher.decrypt(token) for token in tokens] == PLAINTEXTS * 2
    ivs = {base64.urlsafe_b64decode(token)[9:25] for token in tokens}
    assert len(ivs) == len(tokens)
    assert "110101199003074512" not in "".join(tokens)
    assert cipher.encrypt_many([]) == []


def test_a_tampered_token_is_refused() -> None:
    key = Fernet.generate_key()
    raw = bytearray(base64.urlsafe_b64decode(PiiCipher(key.decode()).encrypt_many(["王建国"])[0]))
    raw[30] ^= 1  # a ciphertext bit
    with pytest.raises(InvalidToken):
        Fernet(key).decrypt(base64.urlsafe_b64encode(bytes(raw)))
