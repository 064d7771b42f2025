"""OFX 1.x (SGML), OFX 2.x (XML) and QFX statements to ``BankTxn``, via the ofxtools tree parser.

Real files are cleaned first (headers that are missing or lie, comments, lower-case and
self-closed tags, unclosed or stray aggregates). The file is read a piece at a time: each
piece is cleaned and fed to the tree parser, and each transaction becomes a record and is cut
from the tree as soon as it closes, so memory holds one piece and the elements around the
transactions, however many transactions there are. Values are read from the element tree
directly rather than through ofxtools' strict models, so one bad transaction becomes a row
error instead of a failed file. Booking dates are the first eight digits of DTPOSTED as the
bank wrote them: never shifted through a time zone.

Transfer responses (INTRATRNRS, as csv2ofx writes them) are rejected: a transfer response
confirms an order between two accounts, it is no statement of either, and its account ids are
often synthetic. Investment statements are imported only when all their transactions are cash
lines (INVBANKTRAN); one that also trades securities is rejected, because its cash lines alone
would leave the cash account wrong.
"""

from __future__ import annotations

import bisect
import codecs
import html
import re
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterator
from datetime import date
from functools import cache
from typing import Any, BinaryIO

import ofxtools.models as ofx_models
from ofxtools.models.base import Aggregate
from ofxtools.Parser import ParseError, TreeBuilder

from shared.domain.imports import BankTxn, FileFormat, ParsedFile, StatementBalance
from shared.domain.money import exponent, normalise_currency
from shared.errors import ValidationError
from shared.importers.amounts import NON_ASCII_DIGITS, Amount, AmountError, to_minor
from shared.importers.dates import NON_ASCII_DIGITS as NON_ASCII_DATE_DIGITS
from shared.importers.dates import DateError, implausible_year
from shared.importers.report import ErrorLog, listed
from shared.importers.text import FileRejected

# Limitation: transactions are read and dropped as they come, but everything else in an OFX
# file (statuses, accounts, balances, positions, securities) stays in the element tree until
# the end, so files larger than this are rejected rather than read.
OFX_MAX_BYTES = 64 * 1024 * 1024
"""Largest OFX/QFX file read, in bytes (64 MiB)."""

OFX_READ_BYTES = 1024 * 1024
"""Bytes read and decoded at a time (1 MiB)."""

OFX_PIECE_CHARS = 1024 * 1024
"""Characters gathered before they are cleaned and parsed as one piece (about a million)."""

STATEMENT_TAGS = ("STMTRS", "CCSTMTRS", "INVSTMTRS")
NO_STATEMENT = "OFX file contains no bank or card statement"
INVESTMENT_ONLY_CASH = "investment statement: only its cash lines can be imported"

# Clean-up patterns run over whole files, so each must take time linear in the text: every
# repeat that could give back characters to a neighbour is possessive (*+), and comments and
# CDATA sections are found by a plain scan (``_Unwrapper``) instead of lazy patterns.
# Only tags that need a change match: a name with a lower-case letter, or blanks or a slash
# before the ``>``; rewriting every tag as it was took most of the clean-up's time.
_TAG = re.compile(
    r"<(/?)((?=[A-Z0-9._]*+[a-z])[A-Za-z][A-Za-z0-9._]*+|[A-Z][A-Z0-9._]*+(?=[\s/]))\s*+(/?)>"
)
_EMPTY_LEAF = re.compile(r"<([A-Z0-9._]++)>(\s*+)(?=<(?!/\1>))")
_REOPENED_LEAF = re.compile(r"<([A-Z0-9._]++)>(\s*+[^<\s][^<]*+)<\1>")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_OFX_START = re.compile(r"<OFX>")
_STMTTRN = re.compile(r"<STMTTRN>")
# A piece ends after an end tag and the blanks behind it, where markup resumes: no clean-up
# pattern and no ofxtools match reaches across such a point, so a piece cleans and parses
# exactly as it would inside the whole text.
_PIECE_END = re.compile(r"</[A-Za-z][A-Za-z0-9._]*+\s*+>\s*+(?=<)")
_ANNOUNCED = frozenset({"STMTTRN", *STATEMENT_TAGS})
_ACCOUNT_TAGS = {"STMTRS": "BANKACCTFROM", "CCSTMTRS": "CCACCTFROM", "INVSTMTRS": "INVACCTFROM"}
# ofxtools says "Tail text 'x' in <the whole text>" after a start tag, "... after </TAG>"
# after an end tag; both end with the span of the match, relative to the text it was fed.
_TAIL_TEXT = re.compile(
    r"Tail text '(?P<text>.*?)' (?:in|after) .*position=\[(?P<start>\d+):", re.DOTALL
)
_PLAIN_AMOUNT = re.compile(r"([+-]?)([0-9]*)(?:[.,]([0-9]*))?")
_XML_ENCODING = re.compile(r"<\?xml[^>]*encoding=[\"']([^\"']+)", re.IGNORECASE)
_HEADER_FIELD = re.compile(
    r"^[^\S\r\n]*+(ENCODING|CHARSET|VERSION|OFXHEADER)[^\S\r\n]*+:[^\S\r\n]*+(\S++)", re.I | re.M
)


class OfxRows:
    """Streams an OFX file's records; row errors, balances and details are filled in as it goes.

    Creating it reads the file up to its ``<OFX>`` element; iterating reads the rest. The
    whole-file checks (sign-on and statement statuses, a statement at all, an investment
    statement that trades) can only be settled at the end, so iteration raises them after
    the last record.
    """

    def __init__(
        self, stream: BinaryIO, codec: str, parsed: ParsedFile, log: ErrorLog, currency: str
    ) -> None:
        """Read the header, up to the ``<OFX>`` element.

        Args:
            stream: the seekable file.
            codec: its text encoding.
            parsed: receives the format, balances and details once the records are read.
            log: receives row errors (bad or missing DTPOSTED, TRNAMT, BALAMT).
            currency: for statements whose CURDEF is empty.

        Raises:
            FileRejected: there is no ``<OFX>`` element (or a comment or CDATA section before
                it is never closed).
        """
        self._parsed = parsed
        self._pieces = _pieces(stream, codec)
        self._reader = _Reader(currency, log)
        self._builder = _TolerantTreeBuilder(self._reader)
        self._line = 1  # the line the next piece starts on
        self._qfx = False
        self._first, self._offset, header = self._find_start()
        self._xml = _declares_xml(header)
        parsed.format = self._format()

    def __iter__(self) -> Iterator[BankTxn]:
        reader = self._reader
        self._feed(self._first, self._offset)
        self._first = ""
        yield from reader.take()
        for piece in self._pieces:
            self._feed(_clean_markup(piece), 0)
            yield from reader.take()
        root = self._close()
        yield from reader.take()
        reader.settle(root)
        self._parsed.format = self._format()
        self._parsed.balances.extend(reader.balances)
        self._parsed.details.update(
            syntax="xml" if self._xml else "sgml",
            statements=reader.summaries,
            rows_read=reader.transactions_seen,
        )

    def _find_start(self) -> tuple[str, int, str]:
        """The cleaned piece holding ``<OFX>``, the offset of ``<OFX>`` in it, and the header."""
        header: list[str] = []
        for piece in self._pieces:
            cleaned = _clean_markup(piece)
            self._qfx = self._qfx or "<INTU." in cleaned
            start = _OFX_START.search(cleaned)
            if start is not None:
                header.append(cleaned[: start.start()])
                return cleaned, start.start(), "".join(header)
            header.append(cleaned)
            self._line += len(_LINE_BREAK.findall(cleaned))
        raise FileRejected("OFX file has no <OFX> element")

    def _feed(self, cleaned: str, offset: int) -> None:
        """Parse one cleaned piece from ``offset``, numbering its transactions by line."""
        self._qfx = self._qfx or "<INTU." in cleaned
        breaks = [match.end() for match in _LINE_BREAK.finditer(cleaned)]
        first = self._line
        self._reader.expect(
            bisect.bisect_right(breaks, match.start()) + first
            for match in _STMTTRN.finditer(cleaned, offset)
        )
        try:
            self._builder.feed(cleaned[offset:] if offset else cleaned)
        except ParseError as exc:
            message = _unreadable(exc, cleaned, offset, first)
            self._drain()
            raise FileRejected(message) from None
        except (ET.ParseError, IndexError, AssertionError) as exc:
            self._drain()
            raise FileRejected(f"OFX file could not be read: {exc}") from None
        self._line += len(breaks)

    def _drain(self) -> None:
        # A comment or CDATA section left open further on is the first thing the whole-text
        # clean-up would have found, so it wins over a markup error.
        for _ in self._pieces:
            pass

    def _close(self) -> ET.Element:
        try:
            root = self._builder.close()
        except (ParseError, ET.ParseError, IndexError, AssertionError) as exc:
            raise FileRejected(f"OFX file could not be read: {exc}") from None
        if root is None or root.tag != "OFX":
            raise FileRejected("OFX file could not be read: no <OFX> root element")
        return root

    def _format(self) -> FileFormat:
        if self._qfx:
            return FileFormat.QFX
        return FileFormat.OFX_XML if self._xml else FileFormat.OFX_SGML


def declared_encoding(head: bytes) -> str | None:
    """The encoding an OFX header names (XML prolog, or SGML ``ENCODING``/``CHARSET``)."""
    text = head[:4096].decode("latin-1")
    match = _XML_ENCODING.search(text)
    if match is not None:
        return str(match[1])
    fields: dict[str, str] = {key.upper(): value for key, value in _HEADER_FIELD.findall(text)}
    encoding = fields.get("ENCODING", "").upper()
    if encoding in {"", "USASCII"}:
        charset = fields.get("CHARSET", "")
        return None if charset.upper() in {"", "NONE"} else charset
    return encoding


def _clean_markup(text: str) -> str:
    """Make real-world OFX digestible for the tree parser, keeping every line where it was.

    Tag names are upper-cased; ``<TAG/>`` becomes an empty element; a data element reopened
    instead of closed (``<CODE>0<CODE>``) is closed, and so is an empty data element left
    open in SGML. Comments and CDATA sections must be unwrapped already (``_Unwrapper``).
    """
    text = _TAG.sub(_normal_tag, text)
    text = _REOPENED_LEAF.sub(r"<\1>\2</\1>", text)
    return _EMPTY_LEAF.sub(_close_empty_leaf, text)


def _pieces(stream: BinaryIO, codec: str) -> Iterator[str]:
    """The file's text, comments and CDATA unwrapped, in pieces of about ``OFX_PIECE_CHARS``.

    Each piece but the last ends where ``_PIECE_END`` matches, so that it can be cleaned
    and parsed on its own; a file without such a point comes as one piece.

    Raises:
        FileRejected: a comment or CDATA section is never closed.
    """
    decoder = codecs.getincrementaldecoder(codec)(errors="replace")
    unwrapper = _Unwrapper()
    stream.seek(0)
    text = ""
    searched = 0  # no piece end lies before this offset of ``text``
    while chunk := stream.read(OFX_READ_BYTES):
        text += unwrapper.feed(decoder.decode(chunk), final=False)
        if len(text) < OFX_PIECE_CHARS:
            continue
        end = _last_piece_end(text, searched)
        if end > 0:
            yield text[:end]
            text = text[end:]
        # A piece end spans a tag and the blanks behind it; look a little before the new text.
        searched = max(0, len(text) - 4096)
    text += unwrapper.feed(decoder.decode(b"", final=True), final=True)
    if text:
        yield text


def _last_piece_end(text: str, floor: int) -> int:
    """The offset of the last piece end at or after ``floor`` in ``text``, or -1."""
    position = len(text)
    while (found := text.rfind("</", floor, position)) >= 0:
        match = _PIECE_END.match(text, found)
        if match is not None:
            return match.end()
        position = found
    return -1


_SECTIONS = (("<!--", "-->", "comment"), ("<![CDATA[", "]]>", "CDATA section"))
_LONGEST_OPENER = max(len(opener) for opener, _, _ in _SECTIONS)


class _Unwrapper:
    """Replaces comments by their line breaks and CDATA sections by their escaped text.

    Each section ends at the first closing mark after its start, so text between two
    sections on one line stays markup. The tree parser's own CDATA pattern is greedy: given
    a CDATA section it would swallow everything up to the last ``]]>`` of the line.

    Text comes in chunks: from an unfinished section, or from what may begin one, the text
    is held back until the chunk that completes it, so the result does not depend on where
    the chunks were cut.
    """

    def __init__(self) -> None:
        self._held = ""
        self._breaks = 0  # line breaks in the text passed on
        self._after_cr = False  # that text ended with a CR, whose LF may come next

    def feed(self, text: str, *, final: bool) -> str:
        """Unwrap ``text`` after what is held; ``final`` when no text follows.

        Raises:
            FileRejected: with ``final``, a comment or CDATA section is never closed.
        """
        text = self._held + text if self._held else text
        parts: list[str] = []
        position = 0
        keep = len(text)
        while (start := text.find("<!", position)) >= 0:
            section = next(
                (found for found in _SECTIONS if text.startswith(found[0], start)), None
            )
            if section is None:
                if not final and _may_open(text, start):
                    keep = start
                    break
                parts.append(text[position : start + 2])
                position = start + 2
                continue
            opener, closer, kind = section
            end = text.find(closer, start + len(opener))
            if end < 0:
                if final:
                    line = self._breaks + _line_breaks(text[:start], self._after_cr) + 1
                    raise FileRejected(
                        f"OFX file could not be read: a {kind} on line {line} is never closed"
                    )
                keep = start
                break
            parts.append(text[position:start])
            inner = text[start + len(opener) : end]
            if kind == "comment":
                parts.append("".join(_LINE_BREAK.findall(inner)))
            else:
                parts.append(html.escape(inner, quote=False))
            position = end + len(closer)
        else:
            if not final and text.endswith("<") and position < len(text):
                keep = len(text) - 1
        parts.append(text[position:keep])
        self._count(text[:keep] if keep < len(text) else text)
        self._held = text[keep:]
        return "".join(parts)

    def _count(self, passed: str) -> None:
        if passed:
            self._breaks += _line_breaks(passed, self._after_cr)
            self._after_cr = passed.endswith("\r")


def _may_open(text: str, start: int) -> bool:
    """Whether the text from ``start`` to its end may be the start of a section's opener."""
    rest = text[start:]
    return len(rest) < _LONGEST_OPENER and any(
        opener.startswith(rest) for opener, _, _ in _SECTIONS
    )


def _line_breaks(text: str, after_cr: bool) -> int:
    """Line breaks (CRLF, CR or LF) in ``text``; ``after_cr`` when the text before ended in CR."""
    count = text.count("\n") + text.count("\r") - text.count("\r\n")
    return count - 1 if after_cr and text.startswith("\n") else count


def _close_empty_leaf(match: re.Match[str]) -> str:
    """Close a data element left empty in SGML (``<NAME><MEMO>x``) so it holds no siblings."""
    if match[1] in _aggregate_tags():
        return match[0]
    return f"<{match[1]}></{match[1]}>{match[2]}"


@cache
def _aggregate_tags() -> frozenset[str]:
    """Tags ofxtools models as aggregates; any other tag is a data element."""
    return frozenset(
        name
        for name in dir(ofx_models)
        if name.isupper()
        and isinstance(getattr(ofx_models, name), type)
        and issubclass(getattr(ofx_models, name), Aggregate)
    )


def _normal_tag(match: re.Match[str]) -> str:
    closing, name, self_closed = match[1], match[2].upper(), match[3]
    if self_closed:
        return f"<{name}></{name}>"
    return f"<{closing}{name}>"


class _TolerantTreeBuilder(TreeBuilder):
    """ofxtools' builder, made forgiving about aggregates real files leave unclosed.

    An end tag closes every element opened after its start tag; an end tag with no open
    start tag is ignored; a start tag of an aggregate already open closes that one first
    (OFX never nests an aggregate in one of the same name). Each element is announced to the
    reader when it opens and when it closes, if it is a statement or a transaction or lies
    directly in an investment transaction list.
    """

    def __init__(self, reader: _Reader) -> None:
        super().__init__()
        self._reader = reader
        self._elements: list[ET.Element] = []
        # How many of each tag are open, so that checks stay constant time however deep.
        self._open_count: dict[str, int] = {}
        self._last = ET.Element("OFX")

    def start(self, tag: Any, attrs: Any, /) -> ET.Element:
        counts = self._open_count
        if counts.get(tag):
            self.end(tag)
        counts[tag] = counts.get(tag, 0) + 1
        element = super().start(tag, attrs)
        self._elements.append(element)
        if tag in _ANNOUNCED:
            self._reader.opened(element)
        return element

    def end(self, tag: Any, /) -> ET.Element:
        counts = self._open_count
        if not counts.get(tag):
            return self._last
        elements = self._elements
        while elements:
            element = elements.pop()
            top = element.tag
            counts[top] -= 1
            self._last = super().end(top)
            if top in _ANNOUNCED or (elements and elements[-1].tag == "INVTRANLIST"):
                self._reader.closed(element, elements[-1] if elements else None, self)
            if top == tag:
                break
        return self._last

    def close(self) -> ET.Element:
        while self._elements:
            self.end(self._elements[-1].tag)
        return super().close()

    def is_open(self, element: ET.Element) -> bool:
        """Whether ``element`` may still gain children."""
        return any(open_element is element for open_element in self._elements)


def _unreadable(error: ParseError, cleaned: str, offset: int, first_line: int) -> str:
    """Say where the markup broke, without echoing the whole document as ofxtools does.

    ``cleaned`` is the piece being parsed from ``offset``, and starts on line ``first_line``.
    """
    message = str(error.args[0]) if error.args else str(error)
    match = _TAIL_TEXT.match(message)
    if match is None:
        return f"OFX file could not be read: {message[:200]}"
    line = len(_LINE_BREAK.findall(cleaned, 0, offset + int(match["start"]))) + first_line
    return (
        f"OFX file could not be read: text {match['text'][:50]!r} outside any element "
        f"near line {line}"
    )


def _value(element: ET.Element | None, path: str) -> str | None:
    """Text of the first ``path`` under ``element``: ``None`` when absent, ``""`` when empty."""
    if element is None:
        return None
    found = element.find(path)
    if found is None:
        return None
    return html.unescape(found.text or "").strip()


def _field(fields: dict[str, str | None], tag: str) -> str | None:
    """``_value`` of a direct child, from the texts of an element's children by tag."""
    if tag not in fields:
        return None
    return html.unescape(fields[tag] or "").strip()


def _check_status(root: ET.Element) -> None:
    status = root.find("SIGNONMSGSRSV1/SONRS/STATUS")
    code = _value(status, "CODE")
    if code not in {None, "", "0"}:
        raise FileRejected(f"OFX sign-on failed: {_status_text(status)}")
    for response in root.iter():
        if not response.tag.endswith("STMTTRNRS"):
            continue
        code = _value(response, "STATUS/CODE")
        has_statement = any(response.find(tag) is not None for tag in STATEMENT_TAGS)
        if code not in {None, "", "0"} and not has_statement:
            status_text = _status_text(response.find("STATUS"))
            raise FileRejected(f"OFX statement response failed: {status_text}")


def _status_text(status: ET.Element | None) -> str:
    code = _value(status, "CODE") or "?"
    severity = _value(status, "SEVERITY") or "ERROR"
    message = _value(status, "MESSAGE") or "the bank gave no message"
    return f"code {code} ({severity}): {message}"


def _what_instead(root: ET.Element) -> str:
    tags = {element.tag for element in root.iter()}
    if "INTRARS" in tags or "INTRATRNRS" in tags:
        return (
            "intrabank transfer responses only; a transfer response confirms a transfer "
            "order, it is no account statement"
        )
    if "ACCTINFORS" in tags:
        return "account information only"
    if len(root) == 0:
        return "empty <OFX> element"
    sets = sorted({child.tag for child in root})
    if sets == ["SIGNONMSGSRSV1"]:
        return "sign-on only"
    return f"message sets found: {listed(sets)}"


def _declares_xml(header: str) -> bool:
    upper = header.upper()
    if "<?XML" in upper or "<?OFX" in upper:
        return True
    fields: dict[str, str] = {key.upper(): value for key, value in _HEADER_FIELD.findall(header)}
    return fields.get("OFXHEADER", "").startswith("2") or fields.get("VERSION", "").startswith("2")


class _Statement:
    """A statement being read.

    ``known`` once its account and currency are; ``held`` keeps its transactions until then.
    ``seen`` counts its STMTTRN elements, ``count`` the records read from them, ``trades``
    the security transactions of its first INVTRANLIST; ``problem`` is why the file is to be
    rejected for it, if it is.
    """

    __slots__ = (
        "account",
        "count",
        "currency",
        "element",
        "held",
        "kind",
        "known",
        "order",
        "problem",
        "seen",
        "trades",
    )

    def __init__(self, element: ET.Element, order: int) -> None:
        self.element = element
        self.order = order
        self.known = False
        self.kind = self.account = self.currency = ""
        self.problem: str | None = None
        self.held: list[tuple[ET.Element, int]] = []
        self.trades: list[str] = []
        self.seen = 0
        self.count = 0


class _Reader:
    """Turns closed STMTTRN elements into records and statements into balances and summaries.

    A transaction is read when it closes, numbered by the line of its start tag, and cut from
    the tree. Its statement's account and currency come first in a well-formed statement;
    where they do not (no CURDEF, or the account after the transactions), the statement's
    transactions are held until it closes. Whole-file rejections wait for ``settle``, so the
    one reported is the one the order of checks puts first, wherever it lies in the file.
    """

    def __init__(self, default_currency: str, log: ErrorLog) -> None:
        self._default = normalise_currency(default_currency)
        self._log = log
        self._lines: deque[int] = deque()
        self._line_of: dict[ET.Element, int] = {}
        self._open: list[_Statement] = []
        self._statements = 0
        self._problems: list[tuple[int, str]] = []
        self._ready: list[BankTxn] = []
        self.balances: list[StatementBalance] = []
        self.summaries: list[dict[str, object]] = []
        self.transactions_seen = 0

    def expect(self, lines: Iterator[int]) -> None:
        """Lines of the STMTTRN start tags about to be parsed, in order."""
        self._lines.extend(lines)

    def take(self) -> list[BankTxn]:
        """The records read since the last call."""
        ready, self._ready = self._ready, []
        return ready

    def opened(self, element: ET.Element) -> None:
        tag = element.tag
        if tag == "STMTTRN":
            self._line_of[element] = self._lines.popleft() if self._lines else 0
        elif tag in STATEMENT_TAGS:
            self._open.append(_Statement(element, self._statements))
            self._statements += 1

    def closed(
        self, element: ET.Element, parent: ET.Element | None, builder: _TolerantTreeBuilder
    ) -> None:
        tag = element.tag
        if tag == "STMTTRN":
            # An element that closes is its parent's last child: nothing opened after it.
            if parent is not None:
                del parent[-1]
            line = self._line_of.pop(element, 0)
            if self._open:
                self._transaction(self._open[-1], element, line, builder)
        elif tag in STATEMENT_TAGS:
            self._close_statement(self._open.pop())
        elif parent is not None and parent.tag == "INVTRANLIST" and self._open:
            statement = self._open[-1]
            if statement.element.find("INVTRANLIST") is parent:
                if tag not in {"DTSTART", "DTEND", "INVBANKTRAN"}:
                    statement.trades.append(tag)
                del parent[-1]

    def settle(self, root: ET.Element) -> None:
        """Reject the file for what only the whole of it shows, in the order of the checks.

        Raises:
            FileRejected: a failed sign-on or statement request, no statement at all, or the
                first statement (in file order) with a bad CURDEF or security transactions.
        """
        _check_status(root)
        if not self._statements:
            raise FileRejected(f"{NO_STATEMENT} ({_what_instead(root)})")
        if self._problems:
            raise FileRejected(min(self._problems)[1])

    def _transaction(
        self,
        statement: _Statement,
        element: ET.Element,
        line: int,
        builder: _TolerantTreeBuilder,
    ) -> None:
        statement.seen += 1
        self.transactions_seen += 1
        if statement.problem is not None:
            return
        if not statement.known:
            account = statement.element.find(_ACCOUNT_TAGS[statement.element.tag])
            if (
                statement.element.find("CURDEF") is None
                or account is None
                or builder.is_open(account)
            ):
                # Limitation: a statement without CURDEF, or with its account after its
                # transactions, has all its transactions held in memory until it closes.
                statement.held.append((element, line))
                return
            self._identify(statement)
        self._read(statement, element, line)

    def _identify(self, statement: _Statement) -> None:
        statement.known = True
        statement.kind, statement.account = _account_of(statement.element)
        try:
            statement.currency = self._statement_currency(statement.element)
        except FileRejected as exc:
            statement.problem = str(exc)

    def _read(self, statement: _Statement, element: ET.Element, line: int) -> None:
        if statement.problem is None:
            txn = self._record(element, line, statement.account, statement.currency)
            if txn is not None:
                self._ready.append(txn)
                statement.count += 1

    def _close_statement(self, statement: _Statement) -> None:
        if not statement.known:
            self._identify(statement)
        for element, line in statement.held:
            self._read(statement, element, line)
        statement.held.clear()
        if statement.problem is None and statement.kind == "investment":
            statement.problem = _investment_problem(statement)
        if statement.problem is not None:
            self._problems.append((statement.order, statement.problem))
            return
        if statement.kind != "investment":
            self._balance(statement.element, statement.account, statement.currency)
        self.summaries.append(
            {
                "account_ref": statement.account,
                "kind": statement.kind,
                "currency": statement.currency,
                "transactions": statement.count,
            }
        )

    def _statement_currency(self, statement: ET.Element) -> str:
        code = _value(statement, "CURDEF")
        if not code:
            return self._default
        try:
            return normalise_currency(code)
        except ValidationError:
            raise FileRejected(f"OFX statement CURDEF {code!r} is not an ISO 4217 code") from None

    def _record(
        self, element: ET.Element, line: int, account: str, currency: str
    ) -> BankTxn | None:
        # One pass over the children instead of a search per field; a field in a nested
        # aggregate is searched for only when that aggregate is there.
        fields: dict[str, str | None] = {}
        for child in element:
            if child.tag not in fields:
                fields[child.tag] = child.text
        fitid = _field(fields, "FITID") or None
        # Limitation: a transaction with its own CURRENCY keeps that currency and is not
        # converted to CURDEF at CURRATE, so such a statement yields two currencies.
        if "CURRENCY" in fields:
            own_currency = _value(element, "CURRENCY/CURSYM")
            if own_currency:
                currency = self._currency_of(own_currency, currency)
        booked = self._posted(_field(fields, "DTPOSTED"), line, fitid)
        minor = self._amount(_field(fields, "TRNAMT"), line, fitid, currency)
        if booked is None or minor is None:
            return None
        name = _field(fields, "NAME")
        if not name and "PAYEE" in fields:
            name = _value(element, "PAYEE/NAME")
        memo = _field(fields, "MEMO") or ""
        description = " / ".join(part for part in dict.fromkeys((name or "", memo)) if part)
        reference = _field(fields, "CHECKNUM") or _field(fields, "REFNUM") or None
        return BankTxn(line, account, booked, minor, currency, description, fitid, reference)

    def _currency_of(self, code: str, fallback: str) -> str:
        try:
            return normalise_currency(code)
        except ValidationError:
            return fallback

    def _posted(self, text: str | None, line: int, fitid: str | None) -> date | None:
        which = f"transaction {fitid}" if fitid else "a transaction without FITID"
        if not text:
            self._log.add(line, "DTPOSTED", text, f"{which} has no DTPOSTED (booking date)")
            return None
        try:
            return read_ofx_date(text)
        except DateError as exc:
            self._log.add(line, "DTPOSTED", text, f"{exc.reason} ({which})")
            return None

    def _amount(self, text: str | None, line: int, fitid: str | None, currency: str) -> int | None:
        which = f"transaction {fitid}" if fitid else "a transaction without FITID"
        if not text:
            self._log.add(line, "TRNAMT", text, f"{which} has no TRNAMT (amount)")
            return None
        try:
            return ofx_minor(text, currency)
        except AmountError as exc:
            self._log.add(line, "TRNAMT", text, f"{exc.reason} ({which})")
            return None

    def _balance(self, statement: ET.Element, account: str, currency: str) -> None:
        text = _value(statement, "LEDGERBAL/BALAMT")
        if not text:
            return
        try:
            minor = ofx_minor(text, currency)
        except AmountError as exc:
            self._log.add(None, "BALAMT", text, f"{exc.reason} (LEDGERBAL of {account})")
            return
        as_of = ofx_date(_value(statement, "LEDGERBAL/DTASOF") or "")
        self.balances.append(StatementBalance(account, currency, minor, as_of))


def _account_of(statement: ET.Element) -> tuple[str, str]:
    if statement.tag == "CCSTMTRS":
        return "card", _value(statement, "CCACCTFROM/ACCTID") or ""
    if statement.tag == "INVSTMTRS":
        broker = _value(statement, "INVACCTFROM/BROKERID") or ""
        account = _value(statement, "INVACCTFROM/ACCTID") or ""
        return "investment", "/".join(part for part in (broker, account) if part)
    bank = _value(statement, "BANKACCTFROM/BANKID") or ""
    account = _value(statement, "BANKACCTFROM/ACCTID") or ""
    return "bank", "/".join(part for part in (bank, account) if part)


def _investment_problem(statement: _Statement) -> str | None:
    # Limitation: the cash effect of trades and income (their TOTAL with SUBACCTFUND CASH)
    # is not booked, so an investment statement that has any is rejected whole.
    if statement.trades:
        kinds = listed(sorted(set(statement.trades)))
        return (
            f"{INVESTMENT_ONLY_CASH}, but account {statement.account} also has "
            f"{len(statement.trades)} security transaction(s) ({kinds}); importing the cash "
            "lines alone would leave its cash incomplete"
        )
    if not statement.seen:
        return (
            f"{INVESTMENT_ONLY_CASH}, and account {statement.account} has none "
            "(positions and balances only)"
        )
    return None


def ofx_date(text: str) -> date | None:
    """The bank's local date of an OFX datetime, or ``None``; see ``read_ofx_date``."""
    try:
        return read_ofx_date(text)
    except DateError:
        return None


def read_ofx_date(text: str) -> date:
    """The bank's local date of an OFX datetime: its first eight digits.

    Raises:
        DateError: not eight ASCII digits making a calendar date, or a year no booking has.
    """
    digits = text.strip()[:8]
    if not digits.isascii() and any(ch.isdigit() for ch in digits):
        raise DateError(NON_ASCII_DATE_DIGITS)
    if len(digits) != 8 or not (digits.isascii() and digits.isdigit()):
        raise DateError("not a date; expected YYYYMMDD")
    try:
        day = date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError:
        raise DateError("not a date; expected YYYYMMDD") from None
    implausible = implausible_year(day)
    if implausible is not None:
        raise DateError(implausible)
    return day


def ofx_minor(text: str, currency: str) -> int:
    """An OFX amount (``-12.34``, ``+00000000000115.8331``, ``12,34``) in minor units.

    Raises:
        AmountError: not a plain decimal, or more decimals than the currency allows.
    """
    match = _PLAIN_AMOUNT.fullmatch(text.strip())
    if match is None or not (match[2] or match[3]):
        if not text.isascii() and any(ch.isdigit() and not ch.isascii() for ch in text):
            raise AmountError(NON_ASCII_DIGITS)
        raise AmountError("not a number; OFX amounts are plain decimals like -12.34")
    amount = Amount(match[1] == "-", match[2], match[3] or "", None)
    return to_minor(amount, exponent(currency), currency)
