"""What evidence a phone may upload, told from the bytes themselves (pure, no I/O).

The declared `Content-Type` is a claim; the first bytes of the file are the fact. A file is
kept only when its type is on the allow-list and its bytes carry that type's signature, so
an HTML page or a script renamed `car.png` is refused before it is stored, and nothing
stored can later be served to a browser as something it is not.

| type              | kind by default | signature                                          |
|-------------------|-----------------|----------------------------------------------------|
| `image/jpeg`      | photo           | `FF D8 FF`                                         |
| `image/png`       | photo           | `89 50 4E 47 0D 0A 1A 0A`                          |
| `image/heic`      | photo           | ISO-BMFF `ftyp` at byte 4 with a HEIF brand        |
| `application/pdf` | document        | `%PDF-`                                            |

HEIC is what iPhones take photos in by default.
"""

from __future__ import annotations

from enum import StrEnum


class EvidenceKind(StrEnum):
    """A photo of the car (what a completed field visit needs), or a scan of a document."""

    PHOTO = "photo"
    DOCUMENT = "document"


JPEG = "image/jpeg"
PNG = "image/png"
HEIC = "image/heic"
PDF = "application/pdf"
ALLOWED_TYPES: tuple[str, ...] = (JPEG, PNG, HEIC, PDF)
# A PDF is a document; an image may be a photo of the car or a photographed document.
KINDS_OF: dict[str, tuple[EvidenceKind, ...]] = {
    JPEG: (EvidenceKind.PHOTO, EvidenceKind.DOCUMENT),
    PNG: (EvidenceKind.PHOTO, EvidenceKind.DOCUMENT),
    HEIC: (EvidenceKind.PHOTO, EvidenceKind.DOCUMENT),
    PDF: (EvidenceKind.DOCUMENT,),
}

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1"})


def media_type(content_type: str) -> str:
    """`image/JPEG; foo=bar` -> `image/jpeg`: parameters dropped, case folded."""
    return content_type.split(";", 1)[0].strip().lower()


def sniff(data: bytes) -> str | None:
    """The allowed type whose signature `data` starts with, or None."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if data.startswith(b"%PDF-"):
        return PDF
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return HEIC
    return None


def default_kind(content_type: str) -> EvidenceKind:
    return KINDS_OF[content_type][0]
