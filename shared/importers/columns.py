"""Column roles of bank and journal CSVs, recognised from header names in five languages.

Header names are compared after folding case, accents and spacing, so ``Débit``, ``DEBIT`` and
``debit`` are one name; ``line_id / debit`` style prefixes and ``Amount (EUR)`` annotations
are understood.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import cache

# Roles in the order they claim columns; synonyms in priority order (the first that matches
# wins for single-column roles). Multi-column roles collect every matching column.
BANK_SYNONYMS: dict[str, tuple[str, ...]] = {
    "account": (
        "auftragskonto", "account number", "account no", "account", "kontonummer", "konto",
        "account name", "numero de compte", "compte", "cuenta", "rekening", "rekeningnummer",
    ),
    "date": (
        "booking date", "posting date", "posted date", "buchungstag", "buchungsdatum",
        "date comptable", "fecha contable", "boekdatum", "date", "transaction date",
        "run date", "datum", "datum der transaktion", "transaktionsdatum", "date operation",
        "date de l'operation", "date de transaction", "fecha", "fecha operacion",
        "transactiedatum", "value date", "valutadatum", "wertstellung", "date de valeur",
        "fecha valor", "valutadatum",
    ),
    "amount": (
        "amount", "transaction amount", "betrag", "umsatz", "montant", "importe", "bedrag",
        "amount in account currency",
    ),
    "debit": (
        "debit", "debit amount", "debits", "withdrawal", "withdrawals", "withdrawal amount",
        "paid out", "money out", "soll", "ausgang", "lastschrift", "debit (-)", "debito",
        "cargo", "cargos", "debet", "af", "rechnungsbetrag ausgehend",
    ),
    "credit": (
        "credit", "credit amount", "credits", "deposit", "deposits", "deposit amount",
        "paid in", "money in", "haben", "eingang", "gutschrift", "credit (+)", "credito",
        "abono", "abonos", "bij", "rechnungsbetrag eingehend",
    ),
    "currency": (
        "currency", "ccy", "curr", "currency code", "wahrung", "waehrung", "devise",
        "monnaie", "monn", "moneda", "divisa", "valuta", "munt", "wahrung der karte",
    ),
    "balance": (
        "balance", "running balance", "runningbalance", "current balance", "kontostand",
        "saldo", "solde", "verfugbares guthaben", "balance after", "nouveau solde",
    ),
    "id": (
        "transaction id", "transaktions-id", "transaktionsid", "fitid", "id",
        "n de transaction", "numero de transaction", "unique id", "transaction number",
    ),
    "reference": (
        "check number", "checknumber", "check no", "check #", "cheque number", "cheque no",
        "reference", "ref", "numero de cheque", "schecknummer",
    ),
    "type": (
        "transaction type", "type", "debit/credit", "credit/debit", "dr/cr", "cr/dr",
        "soll/haben", "s/h", "d/c", "c/d", "debit or credit", "af bij", "af/bij",
    ),
    "payee": (
        "payee", "name", "partner name", "merchant name", "merchant", "counterparty",
        "beneficiary", "payer/payee", "empfanger", "zahlungsempfanger",
        "auftraggeber/empfanger", "beguenstigter/zahlungspflichtiger",
        "begunstigter/zahlungspflichtiger", "name zahlungsbeteiligter", "referenz",
        "beneficiaire", "tiers", "beneficiario", "naam / omschrijving", "naam", "tegenpartij",
        "ordenante", "nom",
    ),
    "description": (
        "action", "description", "desc", "transaction description", "details", "narrative",
        "verwendungszweck", "reason", "libelle", "libelle operation", "concepto",
        "descripcion", "omschrijving", "payment reference", "zahlungsreferenz", "purpose",
        "security description", "particulars", "transaction details",
    ),
    "memo": (
        "memo", "notes", "note", "comment", "comments", "additional description",
        "beschreibung", "original description", "mededelingen", "observaciones",
        "remarques", "commentaire",
    ),
}  # fmt: skip

JOURNAL_SYNONYMS: dict[str, tuple[str, ...]] = {
    "entry": (
        "txnidx", "journalnumber", "journal number", "journal no", "entry", "entry no",
        "entry number", "entry id", "entry ref", "entry reference", "journal entry",
        "journal entry id", "move", "move id", "ref", "belegnummer", "beleg",
        "buchungsnummer", "numero de piece", "piece", "asiento", "boekstuk",
        "transaction no", "txn id",
    ),
    "account": (
        "account code", "accountcode", "account_id", "account id", "account number",
        "account", "account name", "accountname", "konto", "sachkonto", "compte",
        "numero de compte", "cuenta", "rekening", "grootboekrekening",
    ),
    "date": (
        "date", "journaldate", "journal date", "entry date", "posting date", "booking date",
        "buchungsdatum", "belegdatum", "datum", "fecha", "transaction date",
    ),
    "amount": ("amount", "netamount", "net amount", "betrag", "montant", "importe", "bedrag"),
    "debit": ("debit", "debits", "soll", "debe", "debet", "debit amount", "dr"),
    "credit": ("credit", "credits", "haben", "haber", "credit amount", "cr"),
    "currency": (
        "commodity", "currency", "ccy", "curr", "currency code", "wahrung", "devise",
        "moneda", "valuta",
    ),
    "memo": (
        "description", "memo", "name", "narration", "text", "buchungstext", "libelle",
        "concepto", "omschrijving", "comment", "posting-comment", "posting comment",
        "partner_id", "partner", "line description",
    ),
}  # fmt: skip

MULTI_COLUMN_ROLES = frozenset({"payee", "description", "memo"})
PROFILE_ROLES = frozenset(BANK_SYNONYMS) | {"entry"}

# Numbered description continuations: VWZ1..VWZ14, Description 1..3, Transaction Ref1..3.
_NUMBERED_MEMO = re.compile(
    r"(vwz|description|transaction ref|verwendungszweck|purpose|memo|narrative)\s*\d{1,2}"
)
_ANNOTATION = re.compile(r"^(.*?)\s*[(\[]([^)\]]*)[)\]]$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class HeaderName:
    """A header cell folded for matching, with any ``(EUR)``/``($)`` annotation split off."""

    raw: str
    key: str
    tail: str
    note: str


@dataclass(slots=True)
class ColumnMap:
    """Which column (0-based) plays which role, plus what the header itself says.

    Attributes:
        single: role -> index for single-column roles.
        multi: role -> indexes for payee/description/memo.
        names: index -> header text, for messages (``""`` for headerless files).
        notes: index -> the header's annotation (``EUR`` of ``Amount (EUR)``).
    """

    single: dict[str, int] = field(default_factory=dict)
    multi: dict[str, list[int]] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    notes: dict[int, str] = field(default_factory=dict)

    def has(self, role: str) -> bool:
        """Whether the role is mapped."""
        return role in self.single or bool(self.multi.get(role))

    def name(self, index: int) -> str:
        """The header text of a column, or ``column N`` (1-based) for headerless files."""
        return self.names.get(index) or f"column {index + 1}"

    def described(self) -> dict[str, str]:
        """Role -> header name(s), for the report."""
        shown = {role: self.name(index) for role, index in self.single.items()}
        for role, indexes in self.multi.items():
            if indexes:
                shown[role] = ", ".join(self.name(index) for index in indexes)
        return shown


def fold(text: str) -> str:
    """Fold a header or marker value for comparison: case, accents, spacing, BOM, quotes."""
    text = text.replace("\ufeff", "").replace("ß", "ss").strip().strip("\"'").lower()
    text = unicodedata.normalize("NFKD", text)
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = text.replace("°", "").replace("º", "")
    return _SPACES.sub(" ", text).strip(" :*.")


def header_name(raw: str) -> HeaderName:
    """Fold one header cell; ``line_id / debit`` also answers to ``debit``."""
    key = fold(raw)
    note = ""
    match = _ANNOTATION.match(key)
    if match is not None and match[1]:
        key, note = match[1].strip(), match[2].strip()
    tail = key.rsplit("/", 1)[1].strip() if "/" in key else key
    return HeaderName(raw, key, tail, note.upper())


def map_headers(
    headers: list[str], synonyms: dict[str, tuple[str, ...]], fixed: dict[str, int] | None = None
) -> ColumnMap:
    """Assign roles to header cells.

    Args:
        headers: the header row as read.
        synonyms: ``BANK_SYNONYMS`` or ``JOURNAL_SYNONYMS``.
        fixed: role -> index already settled by the mapping profile; those columns are
            taken first and never reassigned.

    Returns:
        The mapping; roles without a matching header are simply absent.
    """
    names = [header_name(cell) for cell in headers]
    mapping = ColumnMap(names={i: cell.strip() for i, cell in enumerate(headers)})
    mapping.notes = {i: name.note for i, name in enumerate(names) if name.note}
    taken = set((fixed or {}).values())
    for role, index in (fixed or {}).items():
        _assign(mapping, role, index)
    for role, words in synonyms.items():
        if role in (fixed or {}):
            continue
        for index in _matches(names, words, taken, multi=role in MULTI_COLUMN_ROLES):
            taken.add(index)
            _assign(mapping, role, index)
    if "memo" in synonyms:
        _numbered_memos(mapping, names, taken)
    return mapping


def recognised_count(headers: list[str]) -> int:
    """How many cells of a row are known header names of either file kind."""
    known = _all_known()
    count = 0
    for cell in headers:
        name = header_name(cell)
        if name.key in known or name.tail in known or _NUMBERED_MEMO.fullmatch(name.key):
            count += 1
    return count


@cache
def _all_known() -> frozenset[str]:
    words: set[str] = set()
    for table in (BANK_SYNONYMS, JOURNAL_SYNONYMS):
        for names in table.values():
            words.update(names)
    return frozenset(words)


def _assign(mapping: ColumnMap, role: str, index: int) -> None:
    if role in MULTI_COLUMN_ROLES:
        mapping.multi.setdefault(role, []).append(index)
    else:
        mapping.single[role] = index


def _matches(
    names: list[HeaderName], words: tuple[str, ...], taken: set[int], *, multi: bool
) -> list[int]:
    found: list[int] = []
    for word in words:
        for index, name in enumerate(names):
            if index in taken or index in found:
                continue
            if name.key == word or (name.tail == word and name.tail != name.key):
                if not multi:
                    return [index]
                found.append(index)
    return sorted(found)


def _numbered_memos(mapping: ColumnMap, names: list[HeaderName], taken: set[int]) -> None:
    for index, name in enumerate(names):
        if index not in taken and _NUMBERED_MEMO.fullmatch(name.key):
            taken.add(index)
            _assign(mapping, "memo", index)
    if "memo" in mapping.multi:
        mapping.multi["memo"].sort()
