"""Intake checks of one client file: its type from its first bytes, its page count, and every
reason it cannot be read (empty, truncated, corrupt, password-protected, too large)."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from pypdf import PdfReader
from pypdf.errors import PdfReadError

log = logging.getLogger(__name__)

PDF = "application/pdf"
JPEG = "image/jpeg"
PNG = "image/png"
TIFF = "image/tiff"

# How far from the end a PDF's %%EOF marker may sit (trailing garbage is common).
PDF_EOF_WINDOW_BYTES = 2048


class Unreadable(Exception):
    """The file cannot be taken in; the message is the quarantine reason."""


@dataclass(frozen=True, slots=True)
class Inspected:
    """What intake learned about a sound file."""

    media_type: str
    page_count: int
    reader: PdfReader | None


def sniff(data: bytes) -> str | None:
    """The media type the first bytes announce (PDF, JPEG, PNG, TIFF), or None."""
    head = data[:1024]
    if b"%PDF-" in head:
        return PDF
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return TIFF
    return None


def inspect(data: bytes, *, max_bytes: int, max_pages: int) -> Inspected:
    """Check a file and count its pages.

    Args:
        data: the exact bytes.
        max_bytes: largest size accepted, in bytes (DOCUMENTS_MAX_BYTES).
        max_pages: most pages accepted (DOCUMENTS_MAX_PAGES).

    Raises:
        Unreadable: the reason the file goes to quarantine.
    """
    if not data:
        raise Unreadable("the file is empty (0 bytes)")
    if len(data) > max_bytes:
        raise Unreadable(
            f"the file is {len(data)} bytes, over the limit of {max_bytes} bytes "
            "(DOCUMENTS_MAX_BYTES)"
        )
    media_type = sniff(data)
    if media_type is None:
        raise Unreadable(
            "unsupported file type: the content is not PDF, JPEG, PNG or TIFF "
            f"(it starts with {data[:8]!r})"
        )
    if media_type == PDF:
        reader = _open_pdf(data)
        pages = len(reader.pages)
    else:
        reader = None
        pages = _image_pages(data, media_type)
    if pages > max_pages:
        raise Unreadable(
            f"the file has {pages} pages, over the limit of {max_pages} (DOCUMENTS_MAX_PAGES)"
        )
    return Inspected(media_type, pages, reader)


def _open_pdf(data: bytes) -> PdfReader:
    if b"%%EOF" not in data[-PDF_EOF_WINDOW_BYTES:]:
        raise Unreadable("truncated PDF: it does not end with an %%EOF marker")
    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted and not reader.decrypt(""):
            raise Unreadable("password-protected PDF: it cannot be opened without a password")
        pages = len(reader.pages)
    except Unreadable:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Unreadable(f"corrupt PDF: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on broken files
        raise Unreadable(f"corrupt PDF: {type(exc).__name__}: {_first_line(exc)}") from None
    if pages == 0:
        raise Unreadable("corrupt PDF: it has no pages")
    return reader


def _image_pages(data: bytes, media_type: str) -> int:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            return int(getattr(image, "n_frames", 1))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        kind = media_type.split("/")[1].upper()
        raise Unreadable(f"corrupt {kind} image: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
