"""Stripe through the stripe library: webhook signature verification.

Only this module imports ``stripe``; callers get plain values and AdvisorOS errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import stripe

from shared.errors import ConfigError, UpstreamError, ValidationError


def verify_signature(payload: bytes, header: str | None, secrets: Sequence[str]) -> int:
    """Check a ``Stripe-Signature`` header against the raw body with each endpoint secret.

    The signature is computed over the exact bytes Stripe sent, so the body must not have been
    decoded and re-encoded on the way. The header may carry several ``v1=`` signatures (during
    secret rotation Stripe signs with the old and the new secret); one match with any secret
    passes. The age of the timestamp is not checked here: the caller compares the returned
    timestamp with its own clock (see ``shared.services.webhooks.accept_stripe``).

    Args:
        payload: the request body as received.
        header: the ``Stripe-Signature`` header value, or None when absent.
        secrets: the endpoint signing secrets configured (``whsec_...``).

    Returns:
        The header's ``t=`` timestamp, in Unix seconds.

    Raises:
        ValidationError: the header is missing, malformed, or matches no secret.
        ConfigError: no secret is configured.
    """
    if not secrets:
        raise ConfigError("STRIPE_WEBHOOK_SECRETS is not set: Stripe webhooks cannot be verified")
    if not header:
        raise ValidationError("the Stripe-Signature header is missing")
    timestamp = _timestamp(header)
    if not any(item.partition("=")[0].strip() == "v1" for item in header.split(",")):
        raise ValidationError("the Stripe-Signature header has no v1 signature")
    for secret in secrets:
        try:
            # No tolerance here: the library would read the wall clock and let timestamps
            # from the future through; the caller checks the age both ways.
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance=None)
        except stripe.SignatureVerificationError:
            continue
        except UnicodeDecodeError:
            raise ValidationError("the body is not UTF-8, so Stripe did not sign it") from None
        return timestamp
    raise ValidationError("the Stripe-Signature header matches no configured endpoint secret")


def _timestamp(header: str) -> int:
    # The library takes the first ``t=`` item; so does this.
    for item in header.split(","):
        key, _, value = item.partition("=")
        if key.strip() == "t":
            if value.strip().isascii() and value.strip().isdigit():
                return int(value.strip())
            break
    raise ValidationError("the Stripe-Signature header has no valid t= timestamp")


def create_invoice(
    *,
    api_key: str,
    api_base: str,
    customer_key: str,
    customer_name: str,
    amount_minor: int,
    currency: str,
    description: str,
    idempotency_key: str,
    metadata: dict[str, str],
) -> str:
    """Create, fill and finalise one Stripe invoice, safely repeatable.

    Each of the four calls carries an idempotency key derived from ``idempotency_key``, so a
    repeat after a crash gets Stripe's stored answers instead of a second invoice. Sibling of
    ``verify_signature``, which checks what Stripe sends back about it.

    Args:
        api_key: the secret key.
        api_base: the API's base URL (tests point it at a local fake).
        customer_key: a stable key for the customer (the client id).
        customer_name: shown on the invoice.
        amount_minor: the fee, in minor units of ``currency``.
        currency: ISO 4217 code.
        description: the invoice line.
        idempotency_key: unique per invoice wanted (derived from the engagement).
        metadata: kept on the invoice (the engagement id), so its events can be matched.

    Returns:
        The finalised invoice's id (``in_...``).

    Raises:
        UpstreamError: Stripe refused or could not be reached; ``retryable`` says whether
            the same call may be tried again.
    """
    client = stripe.StripeClient(api_key, base_addresses={"api": api_base}, max_network_retries=2)
    try:
        customer = client.v1.customers.create(
            params={"name": customer_name, "metadata": {"client_id": customer_key}},
            options={"idempotency_key": f"{idempotency_key}:customer"},
        )
        invoice = client.v1.invoices.create(
            params={
                "customer": customer.id,
                "collection_method": "send_invoice",
                "days_until_due": 14,
                "currency": currency.lower(),
                "metadata": metadata,
            },
            options={"idempotency_key": f"{idempotency_key}:invoice"},
        )
        client.v1.invoice_items.create(
            params={
                "customer": customer.id,
                "invoice": str(invoice.id),
                "amount": amount_minor,
                "currency": currency.lower(),
                "description": description,
            },
            options={"idempotency_key": f"{idempotency_key}:item"},
        )
        final = client.v1.invoices.finalize_invoice(
            str(invoice.id), options={"idempotency_key": f"{idempotency_key}:finalize"}
        )
    except stripe.StripeError as exc:
        status = exc.http_status or 0
        raise UpstreamError(
            f"Stripe refused the invoice: {exc.user_message or exc}",
            provider="stripe",
            status=status,
            request_id=exc.request_id,
            retryable=status == 0 or status == 429 or status >= 500,
        ) from exc
    return str(final.id)
