"""OFX 1.x (SGML), OFX 2.x (XML) and QFX statements to ``BankTxn``, via the ofxtools tree parser.

Real files are cleaned first (headers that are missing or lie, comments, lower-case and
self-closed tags, unclosed or stray aggregates). Values are then read from the element tree
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
import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from typing import Any

import ofxtools.models as ofx_models
from ofxtools.models.base import Aggregate
from ofxtools.Parser import ParseError, TreeBuilder

from shared.domain.imports import BankTxn, FileFormat, StatementBalance
from shared.domain.money import exponent, normalise_currency
from shared.errors import ValidationError
from shared.importers.amounts import NON_ASCII_DIGITS, Amount, AmountError, to_minor
from shared.importers.dates import NON_ASCII_DIGITS as NON_ASCII_DATE_DIGITS
from shared.importers.dates import DateError, implausible_year
from shared.importers.report import ErrorLog, listed
from shared.importers.text import FileRejected

# Limitation: an OFX file is decoded and parsed whole, taking about twenty times its size in
# memory, so files larger than this are rejected rather than read.
OFX_MAX_BYTES = 64 * 1024 * 1024
"""Largest OFX/QFX file read, in bytes (64 MiB)."""

STATEMENT_TAGS = ("STMTRS", "CCSTMTRS", "INVSTMTRS")
NO_STATEMENT = "OFX file contains no bank or card statement"
INVESTMENT_ONLY_CASH = "investment statement: only its cash lines can be imported"

# Clean-up patterns run over whole files, so each must take time linear in the text: every
# repeat that could give back characters to a neighbour is possessive (*+), and comments and
# CDATA sections are found by a plain scan (``_unwrap``) instead of lazy patterns.
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9._]*+)\s*+(/?)>")
_EMPTY_LEAF = re.compile(r"<([A-Z0-9._]++)>(\s*+)(?=<(?!/\1>))")
_REOPENED_LEAF = re.compile(r"<([A-Z0-9._]++)>(\s*+[^<\s][^<]*+)<\1>")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_OFX_START = re.compile(r"<OFX>")
_STMTTRN = re.compile(r"<STMTTRN>")
_TAIL_TEXT = re.compile(r"Tail text '(?P<text>.*?)' in .*position=\[(?P<start>\d+):", re.DOTALL)
_PLAIN_AMOUNT = re.compile(r"([+-]?)([0-9]*)(?:[.,]([0-9]*))?")
_XML_ENCODING = re.compile(r"<\?xml[^>]*encoding=[\"']([^\"']+)", re.IGNORECASE)
_HEADER_FIELD = re.compile(
    r"^[^\S\r\n]*+(ENCODING|CHARSET|VERSION|OFXHEADER)[^\S\r\n]*+:[^\S\r\n]*+(\S++)", re.I | re.M
)


@dataclass(slots=True)
class OfxResult:
    """A parsed OFX file: everything is read eagerly, the tree being in memory anyway."""

    format: FileFormat
    records: list[BankTxn] = field(default_factory=list)
    balances: list[StatementBalance] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)


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


def parse_ofx(text: str, *, default_currency: str, log: ErrorLog) -> OfxResult:
    """Parse a whole decoded OFX/QFX file.

    Args:
        text: the file's text.
        default_currency: for statements whose CURDEF is empty.
        log: receives row errors (bad or missing DTPOSTED, TRNAMT, BALAMT).

    Raises:
        FileRejected: unreadable markup, failed sign-on or statement request, no statement,
            or an investment statement that trades securities.
    """
    cleaned = clean(text)
    start = _OFX_START.search(cleaned)
    if start is None:
        raise FileRejected("OFX file has no <OFX> element")
    root = _build_tree(cleaned, start.start())
    _check_status(root)
    statements = [element for element in root.iter() if element.tag in STATEMENT_TAGS]
    if not statements:
        raise FileRejected(f"{NO_STATEMENT} ({_what_instead(root)})")
    result = OfxResult(_file_format(text, cleaned))
    reader = _StatementReader(_transaction_lines(root, cleaned), default_currency, log)
    for statement in statements:
        reader.read(statement, result)
    result.details.update(
        syntax="xml" if _declares_xml(text[: start.start()]) else "sgml",
        statements=reader.summaries,
        rows_read=reader.transactions_seen,
    )
    return result


def clean(text: str) -> str:
    """Make real-world OFX digestible for the tree parser, keeping every line where it was.

    Comments become their own line breaks; each CDATA section becomes its text, escaped;
    tag names are upper-cased; ``<TAG/>`` becomes an empty element; a data element reopened
    instead of closed (``<CODE>0<CODE>``) is closed, and so is an empty data element left
    open in SGML.

    Raises:
        FileRejected: a comment or CDATA section is never closed.
    """
    text = _unwrap(text)
    text = _TAG.sub(_normal_tag, text)
    text = _REOPENED_LEAF.sub(r"<\1>\2</\1>", text)
    return _EMPTY_LEAF.sub(_close_empty_leaf, text)


_SECTIONS = (("<!--", "-->", "comment"), ("<![CDATA[", "]]>", "CDATA section"))


def _unwrap(text: str) -> str:
    """Replace comments by their line breaks and CDATA sections by their escaped text.

    Each section ends at the first closing mark after its start, so text between two
    sections on one line stays markup. The tree parser's own CDATA pattern is greedy: given
    a CDATA section it would swallow everything up to the last ``]]>`` of the line.
    """
    parts: list[str] = []
    position = 0
    while (start := text.find("<!", position)) >= 0:
        section = next((found for found in _SECTIONS if text.startswith(found[0], start)), None)
        if section is None:
            parts.append(text[position : start + 2])
            position = start + 2
            continue
        opener, closer, kind = section
        end = text.find(closer, start + len(opener))
        if end < 0:
            line = len(_LINE_BREAK.findall(text, 0, start)) + 1
            raise FileRejected(
                f"OFX file could not be read: a {kind} on line {line} is never closed"
            )
        parts.append(text[position:start])
        inner = text[start + len(opener) : end]
        if kind == "comment":
            parts.append("".join(_LINE_BREAK.findall(inner)))
        else:
            parts.append(html.escape(inner, quote=False))
        position = end + len(closer)
    parts.append(text[position:])
    return "".join(parts)


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
    (OFX never nests an aggregate in one of the same name).
    """

    def __init__(self) -> None:
        super().__init__()
        self._open: list[str] = []
        # How many of each tag are open, so that checks stay constant time however deep.
        self._open_count: dict[str, int] = {}
        self._last = ET.Element("OFX")
        self.stray_end_tags = 0

    def start(self, tag: Any, attrs: Any, /) -> ET.Element:
        if self._open_count.get(tag):
            self.end(tag)
        self._open.append(tag)
        self._open_count[tag] = self._open_count.get(tag, 0) + 1
        return super().start(tag, attrs)

    def end(self, tag: Any, /) -> ET.Element:
        if not self._open_count.get(tag):
            self.stray_end_tags += 1
            return self._last
        while self._open:
            top = self._open.pop()
            self._open_count[top] -= 1
            self._last = super().end(top)
            if top == tag:
                break
        return self._last

    def close(self) -> ET.Element:
        while self._open:
            self.end(self._open[-1])
        return super().close()


def _build_tree(cleaned: str, offset: int) -> ET.Element:
    builder = _TolerantTreeBuilder()
    try:
        builder.feed(cleaned[offset:])
        root = builder.close()
    except ParseError as exc:
        raise FileRejected(_unreadable(exc, cleaned, offset)) from None
    except (ET.ParseError, IndexError, AssertionError) as exc:
        raise FileRejected(f"OFX file could not be read: {exc}") from None
    if root is None or root.tag != "OFX":
        raise FileRejected("OFX file could not be read: no <OFX> root element")
    return root


def _unreadable(error: ParseError, cleaned: str, offset: int) -> str:
    """Say where the markup broke, without echoing the whole document as ofxtools does."""
    message = str(error.args[0]) if error.args else str(error)
    match = _TAIL_TEXT.match(message)
    if match is None:
        return f"OFX file could not be read: {message[:200]}"
    line = len(_LINE_BREAK.findall(cleaned, 0, offset + int(match["start"]))) + 1
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


def _file_format(text: str, cleaned: str) -> FileFormat:
    if "<INTU." in cleaned:
        return FileFormat.QFX
    start = _OFX_START.search(cleaned)
    header = text[: start.start()] if start else ""
    return FileFormat.OFX_XML if _declares_xml(header) else FileFormat.OFX_SGML


def _transaction_lines(root: ET.Element, cleaned: str) -> dict[ET.Element, int]:
    """Line of each STMTTRN element: the n-th element in the tree is the n-th tag in the text."""
    breaks = [match.end() for match in _LINE_BREAK.finditer(cleaned)]
    lines = [
        bisect.bisect_right(breaks, match.start()) + 1 for match in _STMTTRN.finditer(cleaned)
    ]
    return dict(zip(root.iter("STMTTRN"), lines, strict=False))


class _StatementReader:
    """Reads statements into a result, numbering each transaction by its line in the file."""

    def __init__(self, lines: dict[ET.Element, int], default_currency: str, log: ErrorLog) -> None:
        self._lines = lines
        self._default = normalise_currency(default_currency)
        self._log = log
        self.summaries: list[dict[str, object]] = []
        self.transactions_seen = 0

    def read(self, statement: ET.Element, result: OfxResult) -> None:
        kind, account = _account_of(statement)
        currency = self._statement_currency(statement)
        transactions = self._transactions(statement, kind, account)
        before = len(result.records)
        for element in transactions:
            txn = self._transaction(element, account, currency)
            if txn is not None:
                result.records.append(txn)
        if kind != "investment":
            self._balance(statement, account, currency, result)
        self.summaries.append(
            {
                "account_ref": account,
                "kind": kind,
                "currency": currency,
                "transactions": len(result.records) - before,
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

    def _transactions(self, statement: ET.Element, kind: str, account: str) -> list[ET.Element]:
        if kind != "investment":
            return list(statement.iter("STMTTRN"))
        # Limitation: the cash effect of trades and income (their TOTAL with SUBACCTFUND CASH)
        # is not booked, so an investment statement that has any is rejected whole.
        trades = _security_transactions(statement)
        cash = list(statement.iter("STMTTRN"))
        if trades:
            kinds = listed(sorted(set(trades)))
            raise FileRejected(
                f"{INVESTMENT_ONLY_CASH}, but account {account} also has {len(trades)} "
                f"security transaction(s) ({kinds}); importing the cash lines alone would "
                "leave its cash incomplete"
            )
        if not cash:
            raise FileRejected(
                f"{INVESTMENT_ONLY_CASH}, and account {account} has none "
                "(positions and balances only)"
            )
        return cash

    def _transaction(self, element: ET.Element, account: str, currency: str) -> BankTxn | None:
        self.transactions_seen += 1
        line = self._lines.get(element, 0)
        fitid = _value(element, "FITID") or None
        # Limitation: a transaction with its own CURRENCY keeps that currency and is not
        # converted to CURDEF at CURRATE, so such a statement yields two currencies.
        own_currency = _value(element, "CURRENCY/CURSYM")
        if own_currency:
            currency = self._currency_of(own_currency, currency)
        booked = self._posted(element, line, fitid)
        minor = self._amount(element, line, fitid, currency)
        if booked is None or minor is None:
            return None
        name = _value(element, "NAME") or _value(element, "PAYEE/NAME") or ""
        memo = _value(element, "MEMO") or ""
        description = " / ".join(part for part in dict.fromkeys((name, memo)) if part)
        reference = _value(element, "CHECKNUM") or _value(element, "REFNUM") or None
        return BankTxn(line, account, booked, minor, currency, description, fitid, reference)

    def _currency_of(self, code: str, fallback: str) -> str:
        try:
            return normalise_currency(code)
        except ValidationError:
            return fallback

    def _posted(self, element: ET.Element, line: int, fitid: str | None) -> date | None:
        text = _value(element, "DTPOSTED")
        which = f"transaction {fitid}" if fitid else "a transaction without FITID"
        if not text:
            self._log.add(line, "DTPOSTED", text, f"{which} has no DTPOSTED (booking date)")
            return None
        try:
            return read_ofx_date(text)
        except DateError as exc:
            self._log.add(line, "DTPOSTED", text, f"{exc.reason} ({which})")
            return None

    def _amount(
        self, element: ET.Element, line: int, fitid: str | None, currency: str
    ) -> int | None:
        text = _value(element, "TRNAMT")
        which = f"transaction {fitid}" if fitid else "a transaction without FITID"
        if not text:
            self._log.add(line, "TRNAMT", text, f"{which} has no TRNAMT (amount)")
            return None
        try:
            return ofx_minor(text, currency)
        except AmountError as exc:
            self._log.add(line, "TRNAMT", text, f"{exc.reason} ({which})")
            return None

    def _balance(
        self, statement: ET.Element, account: str, currency: str, result: OfxResult
    ) -> None:
        text = _value(statement, "LEDGERBAL/BALAMT")
        if not text:
            return
        try:
            minor = ofx_minor(text, currency)
        except AmountError as exc:
            self._log.add(None, "BALAMT", text, f"{exc.reason} (LEDGERBAL of {account})")
            return
        as_of = ofx_date(_value(statement, "LEDGERBAL/DTASOF") or "")
        result.balances.append(StatementBalance(account, currency, minor, as_of))


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


def _security_transactions(statement: ET.Element) -> list[str]:
    listing = statement.find("INVTRANLIST")
    if listing is None:
        return []
    skip = {"DTSTART", "DTEND", "INVBANKTRAN", "STMTTRN"}
    return [child.tag for child in listing if child.tag not in skip]


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
