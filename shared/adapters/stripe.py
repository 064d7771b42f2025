"""Stripe through the stripe library: webhook signature verification.

Only this module imports ``stripe``; callers get plain values and AdvisorOS errors.
"""

from __future__ import annotations

from collections.abc import Sequence

import stripe

from shared.errors import ConfigError, ValidationError


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
