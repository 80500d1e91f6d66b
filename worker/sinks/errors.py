"""What a delivery attempt can end in, grouped by who must act.

A sink raises `RetryLater` when trying again may help (a 429, a 5xx, a dropped connection), with
the wait the other side asked for; `Undeliverable` when it cannot (a bad token, an unknown
channel, a refused message): that delivery goes to the dead-letter state with the reason.
`DestinationGone` is the webhook's 410: the destination is disabled until someone re-enables it.
"""

from __future__ import annotations


class DeliveryError(Exception):
    """A delivery attempt failed; `reason` is a short code, the message says what happened."""

    reason: str = "delivery_failed"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class RetryLater(DeliveryError):
    """Transient: try again, not before `retry_after` seconds when the other side said so."""

    reason = "transient"

    def __init__(
        self, message: str, *, reason: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class Undeliverable(DeliveryError):
    """Permanent: retrying cannot help; the delivery is dead-lettered with this reason."""

    reason = "undeliverable"


class DestinationGone(Undeliverable):
    """The receiver answered 410 Gone: disable the destination."""

    reason = "gone"
