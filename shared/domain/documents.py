"""What a classifier says about a document: its class, its confidence and its key fields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# The classes a document can have; the API's schema lists the same values.
DocClass = Literal[
    "w2",
    "1099-nec",
    "1099-int",
    "1099-div",
    "1099-misc",
    "1098",
    "bank_statement",
    "credit_card_statement",
    "invoice",
    "receipt",
    "pay_stub",
    "engagement_letter",
    "other",
]
DOC_CLASSES: tuple[str, ...] = get_args(DocClass)

# Fields that hold tax ids or account numbers: encrypted at rest, masked everywhere else.
SENSITIVE_FIELDS = frozenset(
    {"employer_ein", "employee_ssn", "payer_tin", "recipient_tin", "account_number"}
)

FieldKind = Literal["text", "date", "money", "sensitive"]


@dataclass(frozen=True, slots=True)
class ExtractedField:
    """One key field. ``value`` is the text (a date as ISO ``YYYY-MM-DD``, a sensitive value
    in full, money as a plain decimal); money also carries minor units and its currency."""

    name: str
    kind: FieldKind
    value: str
    confidence: float
    page: int | None = None
    amount_minor: int | None = None
    currency: str | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    """A classifier's answer. ``classifier`` is ``local`` or ``docintel``."""

    doc_class: str
    confidence: float
    classifier: str
    classifier_version: str
    fields: tuple[ExtractedField, ...] = ()
    model_id: str | None = None


def mask(value: str) -> str:
    """A sensitive value as shown anywhere outside the database: only its last four
    letters or digits (``***-**-6789`` becomes ``****6789``)."""
    tail = "".join(ch for ch in value if ch.isalnum())[-4:]
    return "****" + tail
