"""Engagement types as data: what each kind of engagement asks of the client, what it costs,
and who reviews it. The orchestration reads these; adding a type needs no code."""

from __future__ import annotations

from dataclasses import dataclass

from shared.domain.documents import DOC_CLASSES
from shared.errors import ValidationError

# A required document is a document class, or a family of classes: any 1099 form answers
# "1099", since which 1099s a client receives varies from year to year.
DOCUMENT_FAMILIES: dict[str, tuple[str, ...]] = {
    "1099": ("1099-nec", "1099-int", "1099-div", "1099-misc"),
}


def requirement_met_by(doc_class: str, required: tuple[str, ...]) -> str | None:
    """The requirement among ``required`` that a document of ``doc_class`` meets, or None."""
    for need in required:
        if doc_class == need or doc_class in DOCUMENT_FAMILIES.get(need, ()):
            return need
    return None


@dataclass(frozen=True, slots=True)
class EngagementType:
    """One kind of engagement.

    Attributes:
        key: its name in requests and rows.
        title: for people.
        required_documents: document classes (or families, ``DOCUMENT_FAMILIES``) that must
            arrive and be classified.
        fee_minor: the fee in minor units of ``currency``.
        currency: ISO 4217 code.
        reminder_every: reminder cadence, in units of the configured reminder interval.
        max_reminders: reminders before the advisor is told (escalation).
        review_steps: the reviews, in order; each is approved or rejected by an advisor.
    """

    key: str
    title: str
    required_documents: tuple[str, ...]
    fee_minor: int
    currency: str
    reminder_every: int
    max_reminders: int
    review_steps: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "key": self.key,
            "title": self.title,
            "required_documents": list(self.required_documents),
            "fee_minor": self.fee_minor,
            "currency": self.currency,
            "reminder_every": self.reminder_every,
            "max_reminders": self.max_reminders,
            "review_steps": list(self.review_steps),
        }


ENGAGEMENT_TYPES: dict[str, EngagementType] = {
    t.key: t
    for t in (
        EngagementType(
            key="individual_tax_return",
            title="Annual individual tax return",
            required_documents=("w2", "1099"),
            fee_minor=45_000,
            currency="USD",
            reminder_every=1,
            max_reminders=3,
            review_steps=("preparer_review", "partner_review"),
        ),
        EngagementType(
            key="monthly_bookkeeping_close",
            title="Monthly bookkeeping close",
            required_documents=("bank_statement",),
            fee_minor=60_000,
            currency="USD",
            reminder_every=1,
            max_reminders=2,
            review_steps=("bookkeeper_review",),
        ),
        EngagementType(
            key="advisory_project",
            title="Advisory project",
            required_documents=("engagement_letter", "bank_statement"),
            fee_minor=250_000,
            currency="USD",
            reminder_every=2,
            max_reminders=2,
            review_steps=("advisor_review", "partner_review"),
        ),
    )
}


def engagement_type(key: str) -> EngagementType:
    """The engagement type named ``key``.

    Raises:
        ValidationError: no such type; the message lists the known ones.
    """
    try:
        return ENGAGEMENT_TYPES[key]
    except KeyError:
        known = ", ".join(sorted(ENGAGEMENT_TYPES))
        raise ValidationError(
            f"engagement_type {key!r} is not known; known types: {known}"
        ) from None


def _check_requirements() -> None:
    # A requirement no classifier can produce would keep an engagement waiting forever.
    for kind in ENGAGEMENT_TYPES.values():
        for need in kind.required_documents:
            if need not in DOC_CLASSES and need not in DOCUMENT_FAMILIES:
                raise ValueError(f"engagement type {kind.key}: {need!r} is no document class")


_check_requirements()
