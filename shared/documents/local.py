"""The local classifier: weighted phrases on a document's text decide its class, and label
patterns read its key fields. Serves when no Document Intelligence endpoint is configured,
and says so: every answer carries ``classifier="local"`` and ``LOCAL_CLASSIFIER_VERSION``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation

from shared.domain.documents import Classification, ExtractedField
from shared.domain.money import to_minor
from shared.errors import ValidationError

LOCAL_CLASSIFIER = "local"
LOCAL_CLASSIFIER_VERSION = "local-rules-1.0"

# Below this total phrase weight nothing is recognised and the answer is "other".
MIN_SCORE = 3.0
# Total weight at which a clear winner is fully trusted.
FULL_SCORE = 8.0

# Phrases per class with their weights, matched on lower-cased text with spaces collapsed.
_RULES: dict[str, tuple[tuple[str, float], ...]] = {
    "w2": (
        (r"wage and tax statement", 5),
        (r"wages, tips,? (and )?other comp", 3),
        (r"\bform w-?2\b", 2),
        (r"employer identification number", 1),
    ),
    "1099-nec": ((r"\b1099-nec\b", 5), (r"nonemployee compensation", 4)),
    "1099-int": ((r"\b1099-int\b", 5), (r"\binterest income\b", 2)),
    "1099-div": (
        (r"\b1099-div\b", 5),
        (r"ordinary dividends", 3),
        (r"dividends and distributions", 3),
    ),
    "1099-misc": (
        (r"\b1099-misc\b", 5),
        (r"miscellaneous (information|income)", 3),
        (r"\broyalties\b", 1),
        (r"\brents\b", 1),
    ),
    "1098": (
        (r"mortgage interest statement", 5),
        (r"\bform 1098\b", 3),
        (r"mortgage interest received", 3),
        (r"outstanding mortgage principal", 2),
    ),
    "bank_statement": (
        (r"\bbank statement\b|\baccount statement\b", 4),
        (r"\b(opening|beginning) balance\b", 2),
        (r"\b(closing|ending) balance\b", 2),
        (r"\b(checking|savings) account\b", 2),
        (r"\bwithdrawals\b", 1),
        (r"\bdeposits\b", 1),
    ),
    "credit_card_statement": (
        (r"credit card|card statement|\bcard (number|ending)\b|cardholder", 3),
        (r"\bminimum (payment|amount) due\b", 3),
        (r"\bprevious balance\b", 2),
        (r"\bnew balance\b", 2),
        (r"\bcredit limit\b|available credit", 2),
        (r"payment due date", 1),
    ),
    "invoice": (
        (r"\binvoice\b|\bfactuur\b|\brechnung\b", 3),
        (r"invoice (number|no\.?|#)|factuurnummer|invoice date", 3),
        (r"\bbill to\b|\bbilled to\b", 2),
        (r"\bamount due\b|\bbalance due\b|te betalen", 1),
        (r"\bdue date\b|payment terms|\bnet 30\b", 1),
    ),
    "receipt": (
        (r"\breceipt\b", 4),
        (r"thank you for (your purchase|shopping)", 2),
        (r"\bchange due\b|\bcash tendered\b|\bamount tendered\b", 2),
        (r"\bcashier\b|\bregister\b|\bstore #", 1),
    ),
    "pay_stub": (
        (r"pay ?stub|earnings statement|pay statement|payslip|paycheck", 4),
        (r"\bgross (pay|earnings)\b", 2),
        (r"\bnet pay\b", 3),
        (r"\bpay period\b|\bpay date\b", 2),
        (r"\bytd\b|year to date", 1),
    ),
    "engagement_letter": (
        (r"engagement letter", 5),
        (r"terms of (our |the )?engagement|scope of (our |the )?(services|engagement)", 3),
        (r"we are pleased to confirm|this letter (confirms|sets out)", 2),
        (r"please sign and return|acknowledged and agreed", 2),
    ),
    # Documents known not to be one of the classes above still win as "other".
    "other": (
        (r"individual income tax return|\bform 1040\b", 6),
        (r"\bform 1120\b|\bform 1065\b|corporation income tax return", 6),
    ),
}
_COMPILED = {
    doc_class: tuple((re.compile(pattern), weight) for pattern, weight in rules)
    for doc_class, rules in _RULES.items()
}

_MONEY = r"\(?-?\s?(?:[$€£]|USD|EUR|GBP)?\s?-?\d{1,3}(?:[,.' ]?\d{3})*(?:[.,]\d{2})\)?"
_MONEY_RE = re.compile(_MONEY)
_DATE_RE = re.compile(
    r"\b(\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{4}|\d{1,2}[.-]\d{1,2}[.-]\d{4}"
    r"|(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.? \d{1,2},? \d{4}"
    r"|\d{1,2} (?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]* \d{4})\b",
    re.IGNORECASE,
)
_TIN_RE = re.compile(
    r"\b(\d{2}-\d{7}|\d{3}-\d{2}-\d{4}|\*{3}-\*{2}-\d{4}|x{3}-x{2}-\d{4})\b", re.I
)
_ACCOUNT_RE = re.compile(r"([Xx*•\d][Xx*•\d -]{2,}\d{4})\b")
_YEAR_RE = re.compile(r"\b(20\d{2}|19\d{2})\b")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}

# Limitation: a value is read only after its label, on the same line or the next; a text
# layer that lists every label before every value, or a value before its label, gives
# wrong or no fields (the class still comes from the phrases).
# How far after a label its value may be, in characters (the rest of the line and the next).
_VALUE_WINDOW = 120

_TOTAL_DUE = r"\b(total due|amount due|balance due|grand total|total paid)\b"

_TITLE_WORDS = re.compile(
    r"^(invoice|receipt|sales receipt|tax invoice|factuur|statement|page \d+.*)$", re.I
)


@dataclass(frozen=True, slots=True)
class _Page:
    number: int
    text: str


_Extractor = Callable[[Sequence[_Page]], list[ExtractedField]]


def classify_text(pages: Sequence[str]) -> Classification:
    """Classify a document from the text of its pages and read its key fields.

    Args:
        pages: each page's text, in order (empty strings for pages without text).

    Returns:
        The class, a confidence in 0-1 and the fields found, marked as the local classifier's.
    """
    doc = [_Page(i, text) for i, text in enumerate(pages, 1)]
    flat = " ".join(" ".join(p.text.split()) for p in doc).lower()
    scores = {
        doc_class: sum(weight for pattern, weight in rules if pattern.search(flat))
        for doc_class, rules in _COMPILED.items()
    }
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    (best, top), (_, runner_up) = ranked[0], ranked[1]
    if top < MIN_SCORE:
        return Classification("other", 0.5, LOCAL_CLASSIFIER, LOCAL_CLASSIFIER_VERSION)
    margin = (top - runner_up) / top
    strength = min(1.0, top / FULL_SCORE)
    confidence = round(0.3 + 0.69 * margin * strength, 4)
    fields = tuple(_EXTRACTORS.get(best, _no_fields)(doc))
    return Classification(best, confidence, LOCAL_CLASSIFIER, LOCAL_CLASSIFIER_VERSION, fields)


def _no_fields(doc: Sequence[_Page]) -> list[ExtractedField]:
    return []


def _find_after(
    doc: Sequence[_Page], label: str | tuple[str, ...], value: re.Pattern[str]
) -> tuple[str, int] | None:
    """The first ``value`` within reach after a match of ``label`` (labels of a tuple are
    tried in turn), and its page."""
    for one in (label,) if isinstance(label, str) else label:
        label_re = re.compile(one, re.IGNORECASE)
        for page in doc:
            for found in label_re.finditer(page.text):
                hit = value.search(_window(page.text, found.end()))
                if hit:
                    return (hit.group(1) if hit.groups() else hit.group(0)).strip(), page.number
    return None


def _window(text: str, start: int) -> str:
    # Only the rest of the label's line and the line after it.
    return "\n".join(text[start : start + _VALUE_WINDOW].split("\n")[:2])


def _period(doc: Sequence[_Page], label: str) -> list[ExtractedField]:
    """The first two dates after a period label: its start and its end."""
    label_re = re.compile(label, re.IGNORECASE)
    for page in doc:
        for found in label_re.finditer(page.text):
            dates = [
                parse_date(m.group(1)) for m in _DATE_RE.finditer(_window(page.text, found.end()))
            ]
            known = [d for d in dates if d is not None]
            if len(known) >= 2:
                return [
                    ExtractedField("period_start", "date", known[0].isoformat(), 0.9, page.number),
                    ExtractedField("period_end", "date", known[1].isoformat(), 0.9, page.number),
                ]
    return []


def _money(
    doc: Sequence[_Page], name: str, label: str | tuple[str, ...], currency: str
) -> ExtractedField | None:
    found = _find_after(doc, label, _MONEY_RE)
    if found is None:
        return None
    text, page = found
    amount = parse_amount(text)
    if amount is None:
        return None
    try:
        minor = to_minor(amount, currency)
    except ValidationError:
        return None
    return ExtractedField(name, "money", str(amount), 0.9, page, minor, currency)


def _date(doc: Sequence[_Page], name: str, label: str | tuple[str, ...]) -> ExtractedField | None:
    found = _find_after(doc, label, _DATE_RE)
    if found is None:
        return None
    parsed = parse_date(found[0])
    if parsed is None:
        return None
    return ExtractedField(name, "date", parsed.isoformat(), 0.9, found[1])


def _sensitive(
    doc: Sequence[_Page], name: str, label: str, pattern: re.Pattern[str]
) -> ExtractedField | None:
    found = _find_after(doc, label, pattern)
    if found is None:
        return None
    return ExtractedField(name, "sensitive", found[0], 0.9, found[1])


def _text(
    doc: Sequence[_Page], name: str, label: str, pattern: str = r"([A-Za-z0-9][\w./-]*)"
) -> ExtractedField | None:
    found = _find_after(doc, label, re.compile(r"[ \t:#]*" + pattern))
    if found is None:
        return None
    return ExtractedField(name, "text", found[0], 0.85, found[1])


def _tax_year(doc: Sequence[_Page]) -> ExtractedField | None:
    found = _find_after(doc, r"tax year|for (calendar )?year", _YEAR_RE)
    if found is None:
        for page in doc:
            hit = _YEAR_RE.search(page.text[:400])
            if hit:
                return ExtractedField("tax_year", "text", hit.group(1), 0.7, page.number)
        return None
    return ExtractedField("tax_year", "text", found[0], 0.9, found[1])


def _currency(doc: Sequence[_Page]) -> str:
    text = " ".join(p.text for p in doc)
    counts = {
        "EUR": text.count("€") + len(re.findall(r"\bEUR\b", text)),
        "GBP": text.count("£") + len(re.findall(r"\bGBP\b", text)),
        "USD": text.count("$") + len(re.findall(r"\bUSD\b", text)),
    }
    best = max(counts, key=lambda code: counts[code])
    return best if counts[best] else "USD"


def _keep(*fields: ExtractedField | None) -> list[ExtractedField]:
    return [f for f in fields if f is not None]


def _w2(doc: Sequence[_Page]) -> list[ExtractedField]:
    return _keep(
        _tax_year(doc),
        _sensitive(doc, "employer_ein", r"employer identification number|\bEIN\b", _TIN_RE),
        _money(doc, "wages", r"wages, tips,? (and )?other comp\w*", "USD"),
        _money(doc, "federal_tax_withheld", r"federal income tax withheld", "USD"),
    )


def _form_1099(amount_name: str, amount_label: str) -> _Extractor:
    def extract(doc: Sequence[_Page]) -> list[ExtractedField]:
        return _keep(
            _tax_year(doc),
            _sensitive(doc, "payer_tin", r"payer'?s? (federal )?(tin|identification)", _TIN_RE),
            _money(doc, amount_name, amount_label, "USD"),
        )

    return extract


def _1099_misc(doc: Sequence[_Page]) -> list[ExtractedField]:
    return _keep(
        _tax_year(doc),
        _sensitive(doc, "payer_tin", r"payer'?s? (federal )?(tin|identification)", _TIN_RE),
        _money(doc, "rents", r"\brents\b", "USD"),
        _money(doc, "royalties", r"\broyalties\b", "USD"),
        _money(doc, "other_income", r"\bother income\b", "USD"),
    )


def _1098(doc: Sequence[_Page]) -> list[ExtractedField]:
    return _keep(
        _tax_year(doc),
        _sensitive(doc, "recipient_tin", r"(recipient|lender)'?s?[’/ a-z']*\btin\b", _TIN_RE),
        _money(
            doc,
            "mortgage_interest",
            r"mortgage interest received( from payer\(s\)/borrower\(s\))?",
            "USD",
        ),
    )


def _vendor(doc: Sequence[_Page]) -> ExtractedField | None:
    labelled = _text(doc, "vendor", r"\b(vendor|seller|sold by)\b|\bfrom\s*:", r"([^\n]+)")
    if labelled is not None:
        return ExtractedField("vendor", "text", labelled.value.strip(), 0.85, labelled.page)
    for line in doc[0].text.split("\n") if doc else ():
        line = line.strip()
        if line and re.search(r"[A-Za-z]{2}", line) and not _TITLE_WORDS.match(line):
            return ExtractedField("vendor", "text", line, 0.6, 1)
    return None


def _invoice(doc: Sequence[_Page]) -> list[ExtractedField]:
    currency = _currency(doc)
    return _keep(
        _vendor(doc),
        _text(doc, "invoice_number", r"invoice (number|no\.?|#)|factuurnummer"),
        _date(doc, "invoice_date", (r"invoice date|factuurdatum|date of issue", r"\bdate\b")),
        _money(doc, "total", (_TOTAL_DUE, r"\btotal\b(?! tax)"), currency),
    )


def _receipt(doc: Sequence[_Page]) -> list[ExtractedField]:
    currency = _currency(doc)
    return _keep(
        _vendor(doc),
        _text(doc, "receipt_number", r"receipt (number|no\.?|#)|transaction (number|#)"),
        _date(doc, "date", r"\bdate\b"),
        _money(doc, "total", (_TOTAL_DUE, r"\btotal\b(?! tax)"), currency),
    )


def _statement(opening: str, closing: str) -> _Extractor:
    def extract(doc: Sequence[_Page]) -> list[ExtractedField]:
        currency = _currency(doc)
        return [
            *_keep(
                _sensitive(
                    doc,
                    "account_number",
                    r"(account|card) (number|no\.?|#|ending in)",
                    _ACCOUNT_RE,
                ),
                _money(doc, "opening_balance", opening, currency),
                _money(doc, "closing_balance", closing, currency),
            ),
            *_period(doc, r"(statement )?period|statement dates"),
        ]

    return extract


def _pay_stub(doc: Sequence[_Page]) -> list[ExtractedField]:
    currency = _currency(doc)
    return [
        *_period(doc, r"pay period"),
        *_keep(
            _money(doc, "gross_pay", r"\bgross (pay|earnings)\b", currency),
            _money(doc, "net_pay", r"\bnet pay\b", currency),
        ),
    ]


_EXTRACTORS = {
    "w2": _w2,
    "1099-nec": _form_1099("nonemployee_compensation", r"nonemployee compensation"),
    "1099-int": _form_1099("interest_income", r"\binterest income\b"),
    "1099-div": _form_1099("ordinary_dividends", r"(total )?ordinary dividends"),
    "1099-misc": _1099_misc,
    "1098": _1098,
    "invoice": _invoice,
    "receipt": _receipt,
    "bank_statement": _statement(r"(opening|beginning) balance", r"(closing|ending) balance"),
    "credit_card_statement": _statement(r"previous balance", r"new balance"),
    "pay_stub": _pay_stub,
}


def parse_amount(text: str) -> Decimal | None:
    """A money amount as printed (``$1,234.56``, ``1.234,56``, ``(12.00)``) as a Decimal."""
    negative = text.strip().startswith("(") or "-" in text
    digits = re.sub(r"[^\d.,]", "", text)
    if len(digits) < 4 or digits[-3] not in ".,":
        return None
    whole = re.sub(r"[.,]", "", digits[:-3])
    try:
        value = Decimal(f"{whole}.{digits[-2:]}")
    except InvalidOperation:
        return None
    return -value if negative else value


def parse_date(text: str) -> date | None:
    """A date as printed (ISO, US ``MM/DD/YYYY``, ``DD.MM.YYYY``, ``March 5, 2025``)."""
    text = text.strip().rstrip(",")
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            return date.fromisoformat(text)
        if match := re.fullmatch(r"(\d{1,2})/(\d{1,2})/(\d{4})", text):
            return date(int(match[3]), int(match[1]), int(match[2]))
        if match := re.fullmatch(r"(\d{1,2})[.-](\d{1,2})[.-](\d{4})", text):
            return date(int(match[3]), int(match[2]), int(match[1]))
        if match := re.fullmatch(r"([A-Za-z]{3})[a-z]*\.? (\d{1,2}),? (\d{4})", text):
            return date(int(match[3]), _MONTHS[match[1].lower()], int(match[2]))
        if match := re.fullmatch(r"(\d{1,2}) ([A-Za-z]{3})[a-z]* (\d{4})", text):
            return date(int(match[3]), _MONTHS[match[2].lower()], int(match[1]))
    except (ValueError, KeyError):
        return None
    return None
