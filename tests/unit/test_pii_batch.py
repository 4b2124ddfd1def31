"""PII sealed a batch at a time (AES-256-GCM, each value its own nonce), and the Fernet
values written before still read."""

from __future__ import annotations

import base64

import pytest
from cryptography.fernet import Fernet, InvalidToken

from shared.pii import GCM_PREFIX, PiiCipher

# Empty, one block, exactly one and two blocks, three blocks of UTF-8, a long name.
PLAINTEXTS = ["", "13812345678", "a" * 15, "a" * 16, "110101199003074512", "王建国" * 6, "张" * 128]


def _raw(token: str) -> bytes:
    assert token.startswith(GCM_PREFIX)
    return base64.urlsafe_b64decode(token[len(GCM_PREFIX) :])


def test_a_batch_reads_back_and_every_value_has_its_own_nonce() -> None:
    cipher = PiiCipher(Fernet.generate_key().decode())
    tokens = cipher.encrypt_many(PLAINTEXTS * 2)
    assert [cipher.decrypt(token) for token in tokens] == PLAINTEXTS * 2
    assert len({_raw(token)[:12] for token in tokens}) == len(tokens)
    assert "110101199003074512" not in "".join(tokens)
    assert cipher.encrypt_many([]) == []


def test_values_sealed_with_fernet_before_still_read() -> None:
    key = Fernet.generate_key()
    old = Fernet(key).encrypt("王建国".encode()).decode()
    assert PiiCipher(key.decode()).decrypt(old) == "王建国"


@pytest.mark.parametrize("at", [0, 12, -1])  # the nonce, the ciphertext, the tag
def test_an_altered_value_is_refused(at: int) -> None:
    cipher = PiiCipher(Fernet.generate_key().decode())
    raw = bytearray(_raw(cipher.encrypt("王建国")))
    raw[at] ^= 1
    with pytest.raises(InvalidToken):
        cipher.decrypt(GCM_PREFIX + base64.urlsafe_b64encode(bytes(raw)).decode())


def test_another_key_reads_nothing() -> None:
    token = PiiCipher(Fernet.generate_key().decode()).encrypt("110101199003074512")
    with pytest.raises(InvalidToken):
        PiiCipher(Fernet.generate_key().decode()).decrypt(token)
    with pytest.raises(InvalidToken):
        PiiCipher(Fernet.generate_key().decode()).decrypt(GCM_PREFIX + "not base64!")
