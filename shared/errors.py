"""The one root of AdvisorOS errors and the typed failures every layer raises."""

from __future__ import annotations


class AdvisorError(Exception):
    """Root of every error AdvisorOS raises on purpose."""


class ValidationError(AdvisorError):
    """Input was wrong; the message names what and where."""


class NotFound(AdvisorError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class Conflict(AdvisorError):
    """The request clashes with the current state (a duplicate, a race lost)."""


class ConfigError(AdvisorError):
    """A setting is missing or invalid; the message names the setting."""


class UpstreamError(AdvisorError):
    """An outside system failed.

    Attributes:
        provider: the system, such as ``azurite`` or ``stripe``.
        status: the HTTP status it answered, if any.
        request_id: its request id, if it gave one.
        retryable: whether trying again may succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        request_id: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status
        self.request_id = request_id
        self.retryable = retryable

    def __str__(self) -> str:
        prefix = f"[{self.provider}"
        if self.request_id:
            prefix += f" request {self.request_id}"
        return f"{prefix}] {super().__str__()}"


class Unauthenticated(AdvisorError):
    """No credential, or one that does not prove who the caller is; the message says why."""


class Forbidden(AdvisorError):
    """The caller is known but may not do this."""


class RateLimited(AdvisorError):
    """Too many requests from one caller.

    Attributes:
        retry_after_s: whole seconds until a request will be taken again.
    """

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
