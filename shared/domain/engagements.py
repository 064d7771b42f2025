"""Engagement types as data: what each kind of engagement asks of the client, what it costs,
and who reviews it. The orchestration reads these; adding a type needs no code."""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import ValidationError


@dataclass(frozen=True, slots=True)
class EngagementType:
    """One kind of engagement.

    Attributes:
        key: its name in requests and rows.
        title: for people.
        required_documents: document classes that must arrive and be classified.
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
            required_documents=("w2", "1099", "prior_year_return"),
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
            required_documents=("engagement_letter", "financial_statements"),
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
