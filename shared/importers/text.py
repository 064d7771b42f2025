"""Bytes to text for imported files: encoding detection, binary and NUL rejection, streamed
reading in lines of bounded length.

Nothing here knows about CSV or OFX; it only decides how the bytes are to be read.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import charset_normalizer

SNIFF_BYTES = 256 * 1024
"""How much of the start of a file is read to detect encoding, format and dialect."""

VALIDATE_CHUNK_BYTES = 1024 * 1024
"""Chunk size of the passes that check that a whole file decodes and holds no NUL, in bytes."""

MAX_LINE_CHARS = 64 * 1024
"""Longest physical line read from a delimited file, in characters.

It bounds the memory one CSV row can take (a line of a million one-character fields would
otherwise become a million strings) and, for fields on one line, the length of a field.
"""

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (an Excel .xlsx workbook is one)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel .xls (OLE2) document"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive"),
)

_BOMS: tuple[tuple[bytes, str, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32", "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32", "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig", "utf-8 (with BOM)"),
    (codecs.BOM_UTF16_LE, "utf-16", "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16", "utf-16"),
)

# Bytes that cp1252 leaves undefined; a file holding them is read as latin-1 instead.
_CP1252_HOLES = frozenset(b"\x81\x8d\x8f\x90\x9d")

# charset-normalizer is trusted only for scripts that cp1252 cannot be mistaken for.
_NON_LATIN_CODECS = frozenset(
    {"cp1251", "cp1253", "cp1255", "cp1256", "koi8_r", "koi8_u", "iso8859_5", "iso8859_7"}
    | {"cp866", "mac_cyrillic", "shift_jis", "cp932", "euc_jp", "gb2312", "gb18030", "big5"}
    | {"euc_kr", "cp949", "cp874", "tis_620"}
)

NON_LATIN_HIGH_BYTE_SHARE = 0.4
"""Share of letters written with bytes >= 0x80 above which a file is taken as non-Latin text."""


class FileRejected(Exception):
    """A whole-file rejection raised inside the package; the entry point re-raises it typed."""


class LineTooLong(ValueError):
    """A physical line of a delimited file is longer than ``MAX_LINE_CHARS``.

    Raised from inside the csv reader's input, so the reader's own line count is one behind:
    the long line is ``reader.line_num + 1``.
    """

    def __init__(self) -> None:
        super().__init__(f"the line is longer than {MAX_LINE_CHARS:,} characters")
        self.reason = str(self)


@dataclass(frozen=True, slots=True)
class Encoding:
    """How a file's bytes become text.

    Attributes:
        codec: the Python codec handed to the decoder.
        label: what the report shows (``utf-8 (with BOM)``, ``cp1252``).
        source: why it was chosen (``byte-order mark``, ``valid UTF-8``, ``mapping profile``...).
    """

    codec: str
    label: str
    source: str


def describe_binary(head: bytes) -> str | None:
    """Name the kind of binary file ``head`` starts, or ``None`` when it may be text."""
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if _bom_encoding(head) is not None or _utf16_without_bom(head) is not None:
        return None
    if b"\x00" in head[:4096]:
        return "binary data, not text"
    return None


def detect_encoding(
    stream: BinaryIO, head: bytes, *, declared: str | None = None, forced: str | None = None
) -> Encoding:
    """Choose the codec for a whole file.

    A profile's encoding wins, then a byte-order mark, then UTF-8 when every byte of the file
    is valid UTF-8, then an encoding the file declares (OFX headers), then cp1252 (latin-1 when
    the file holds bytes cp1252 leaves undefined). charset-normalizer is consulted only for
    text that is clearly not in a Latin script, because on short Western files it confuses
    cp1252 with cp1250 and friends.

    Args:
        stream: the seekable file; read again from the start when the whole file must be checked.
        head: the first ``SNIFF_BYTES`` of the file.
        declared: a codec the file itself names, if any (checked, not trusted).
        forced: a codec from the client's mapping profile.

    Raises:
        FileRejected: the file has a byte-order mark but does not decode with it, or the
            profile names an unknown codec.
    """
    if forced:
        encoding = Encoding(_checked_codec(forced), forced, "mapping profile")
        _require_decodes(stream, encoding)
        return encoding
    bom = _bom_encoding(head)
    if bom is not None:
        encoding = Encoding(bom[0], bom[1], "byte-order mark")
        _require_decodes(stream, encoding)
        return encoding
    utf16 = _utf16_without_bom(head)
    if utf16 is not None:
        encoding = Encoding(utf16, utf16, "zero bytes between ASCII letters")
        _require_decodes(stream, encoding)
        return encoding
    if _first_bad_offset(stream, "utf-8") is None:
        return Encoding("utf-8", "utf-8", "valid UTF-8")
    return _eight_bit_encoding(stream, head, declared)


def require_no_nul(stream: BinaryIO, encoding: Encoding) -> None:
    """Refuse a file holding a NUL character anywhere, reading it once in chunks.

    Text columns in the database cannot hold NUL, and no bank or journal export writes one.
    In UTF-16 and UTF-32 files a NUL character is a whole zero code unit, not a zero byte.

    Raises:
        FileRejected: naming the byte offset of the first NUL.
    """
    codec = encoding.codec.replace("_", "-")
    unit = 4 if codec.startswith("utf-32") else 2 if codec.startswith("utf-16") else 1
    zero = b"\x00" * unit
    stream.seek(0)
    done = 0
    while chunk := stream.read(VALIDATE_CHUNK_BYTES):
        found = chunk.find(zero)
        while found >= 0 and found % unit:
            found = chunk.find(zero, found + 1)
        if found >= 0:
            raise FileRejected(
                f"file contains a NUL byte at byte {done + found}; it is not a text file"
            )
        done += len(chunk)


def capped_lines(handle: io.TextIOBase) -> Iterator[str]:
    """Pass a text file's lines to the csv module, refusing one longer than ``MAX_LINE_CHARS``.

    A line is read at most ``MAX_LINE_CHARS + 1`` characters at a time, so a file without
    line breaks never sits in memory whole. The count includes the line break.

    Raises:
        LineTooLong: when such a line is reached; the lines before it have been passed on.
    """
    read, limit = handle.readline, MAX_LINE_CHARS + 1
    while line := read(limit):
        if len(line) > MAX_LINE_CHARS:
            raise LineTooLong
        yield line


def decode_head(head: bytes, encoding: Encoding, *, complete: bool) -> str:
    """Decode the sniffed start of a file; a character cut at the end of ``head`` is dropped."""
    decoder = codecs.getincrementaldecoder(encoding.codec)(errors="replace")
    return decoder.decode(head, final=complete)


@contextmanager
def text_lines(stream: BinaryIO, encoding: Encoding) -> Iterator[io.TextIOWrapper]:
    """Open ``stream`` as text for the csv module, leaving the caller's stream open afterwards.

    Line endings are passed through untranslated (``newline=""``), so CR-only, LF and CRLF
    files all count lines the way an editor does.
    """
    stream.seek(0)
    wrapper = io.TextIOWrapper(stream, encoding=encoding.codec, newline="")
    try:
        yield wrapper
    finally:
        wrapper.detach()


def _bom_encoding(head: bytes) -> tuple[str, str] | None:
    for bom, codec, label in _BOMS:
        if head.startswith(bom):
            return codec, label
    return None


def _utf16_without_bom(head: bytes) -> str | None:
    """Spot UTF-16 text without a BOM: ASCII letters with a zero byte on one side."""
    sample = head[:4096]
    if len(sample) < 8:
        return None
    odd_zero = sample[1::2].count(0) / (len(sample) // 2)
    even_zero = sample[0::2].count(0) / ((len(sample) + 1) // 2)
    if odd_zero > 0.4 and even_zero < 0.05:
        return "utf-16-le"
    if even_zero > 0.4 and odd_zero < 0.05:
        return "utf-16-be"
    return None


def _checked_codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise FileRejected(f"the mapping profile names an unknown encoding {name!r}") from None


def _require_decodes(stream: BinaryIO, encoding: Encoding) -> None:
    # The BOM is valid UTF-8 itself; checking with plain utf-8 keeps offsets file-relative.
    codec = "utf-8" if encoding.codec == "utf-8-sig" else encoding.codec
    offset = _first_bad_offset(stream, codec)
    if offset is None:
        return
    if encoding.source == "mapping profile":
        raise FileRejected(
            f"file is not {encoding.label} as the mapping profile says: "
            f"byte {offset} does not decode"
        )
    family = encoding.codec.split("-")[0].upper() + "-" + encoding.codec.split("-")[1][:2]
    if encoding.source == "byte-order mark":
        raise FileRejected(
            f"file starts with a {family} byte-order mark but is not {family}: "
            f"byte {offset} does not decode"
        )
    raise FileRejected(f"file looks like {family} but is not: byte {offset} does not decode")


def _first_bad_offset(stream: BinaryIO, codec: str) -> int | None:
    """Decode the whole file in chunks and return the offset of the first bad byte, if any."""
    stream.seek(0)
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    done = 0
    while True:
        chunk = stream.read(VALIDATE_CHUNK_BYTES)
        try:
            decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            return done + exc.start
        if not chunk:
            return None
        done += len(chunk)


def _eight_bit_encoding(stream: BinaryIO, head: bytes, declared: str | None) -> Encoding:
    """The first single-byte codec that decodes the whole file, most specific first."""
    codec = _known_codec(declared) if declared else None
    if codec and codec not in {"utf-8", "ascii"} and _first_bad_offset(stream, codec) is None:
        return Encoding(codec, codec, "declared in the file")
    guess = _non_latin_guess(head)
    if guess is not None and _first_bad_offset(stream, guess) is None:
        return Encoding(guess, guess, "charset detection (non-Latin script)")
    if _has_cp1252_holes(stream):
        return Encoding("latin-1", "latin-1", "not UTF-8; bytes undefined in cp1252")
    # Limitation: a Central European (cp1250) or other 8-bit Latin file without a profile
    # encoding is read as cp1252, so letters such as ł and ś come out wrong.
    return Encoding("cp1252", "cp1252", "not UTF-8; Western default")


def _known_codec(name: str) -> str | None:
    aliases = {"1252": "cp1252", "usascii": "ascii", "none": "", "8859-1": "latin-1"}
    key = name.strip().lower().replace("_", "-")
    key = aliases.get(key, key)
    if not key:
        return None
    try:
        return codecs.lookup(key).name.replace("_", "-")
    except LookupError:
        return None


def _non_latin_guess(head: bytes) -> str | None:
    head = head[:65536]
    letters = sum(1 for b in head if b >= 0x80 or chr(b).isalpha())
    high = sum(1 for b in head if b >= 0x80)
    if not letters or high / letters < NON_LATIN_HIGH_BYTE_SHARE:
        return None
    best = charset_normalizer.from_bytes(head).best()
    if best is None or best.encoding not in _NON_LATIN_CODECS:
        return None
    return str(best.encoding)


def _has_cp1252_holes(stream: BinaryIO) -> bool:
    stream.seek(0)
    while chunk := stream.read(VALIDATE_CHUNK_BYTES):
        if not _CP1252_HOLES.isdisjoint(chunk):
            return True
    return False
