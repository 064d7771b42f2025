"""The text of each page: the PDF text layer, and OCR (Tesseract) for pages without one when
a ``tesseract`` binary is installed."""

from __future__ import annotations

import io
import logging
import shutil
from functools import lru_cache

from pypdf import PdfReader

from shared.documents.inspect import PDF

log = logging.getLogger(__name__)

# A page with fewer letters than this in its text layer is treated as a scan.
MIN_TEXT_CHARS = 20


@lru_cache(maxsize=1)
def ocr_available() -> bool:
    """Whether Tesseract is installed (Debian: ``tesseract-ocr``)."""
    return shutil.which("tesseract") is not None


# Limitation: without a tesseract binary a scanned page has no text, so a scan comes out
# "other" and waits for review; OCR reads the images embedded in a PDF page, not a render
# of the page, so text drawn over an image is read from the text layer only.
def page_texts(data: bytes, media_type: str, reader: PdfReader | None) -> list[str]:
    """Each page's text, in order; a page with no text layer is OCR'd if Tesseract is
    installed, else left empty."""
    if media_type != PDF or reader is None:
        return _ocr_image_file(data)
    texts = []
    for page in reader.pages:
        text = page.extract_text() or ""
        if sum(ch.isalpha() for ch in text) < MIN_TEXT_CHARS and ocr_available():
            text = _ocr_pdf_page_images(page) or text
        texts.append(text)
    return texts


def _ocr_image_file(data: bytes) -> list[str]:
    if not ocr_available():
        return [""]
    from PIL import Image, ImageSequence

    with Image.open(io.BytesIO(data)) as image:
        return [_ocr(frame.copy()) for frame in ImageSequence.Iterator(image)]


def _ocr_pdf_page_images(page: object) -> str:
    from PIL import Image

    parts = []
    for embedded in getattr(page, "images", []):
        with Image.open(io.BytesIO(embedded.data)) as image:
            parts.append(_ocr(image.copy()))
    return "\n".join(parts)


def _ocr(image: object) -> str:
    import pytesseract  # type: ignore[import-untyped]

    return str(pytesseract.image_to_string(image))
