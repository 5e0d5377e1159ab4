"""The transport contract, documented once here; implementations say "See `Transport`".

A `Batch` is one rendered segment going to up to 1000 recipients (SendGrid's per-request limit). The
body carries substitution tags (`Batch.subject`, `html`, `text` contain keys of
`Recipient.substitutions`, e.g. ``[%t%]``); a transport replaces them per recipient — SendGrid does it
server side, the outbox does it while writing each file. Headers are never substituted: per-recipient
headers (List-Unsubscribe) arrive ready in `Recipient.headers`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol


class Recipient(NamedTuple):
    """One recipient of a batch (a tuple: a thousand are made per batch, a million per send)."""

    delivery_id: int | None  # None for a test send, which touches no delivery
    email: str
    name: str
    substitutions: dict[str, str]
    headers: dict[str, str]


class RecipientRows(Sequence[Recipient]):
    """An issue's batch of recipients as one tuple each: ``(delivery_id, email, name, *values)``, the values
    filling, in order, the substitution tags ``substitutions`` and then the headers ``headers``; the batch's
    recipients all have the same tags and headers, and ``fixed_headers`` are the same for each of them.

    A send's million recipients cost a tuple each instead of a tuple and two dicts, and a transport that
    writes its own wire format (SendGrid's JSON, digest.transports.sendgrid) writes the values as they are.
    Read as a sequence it is the `Recipient`s it stands for, so every transport can take it.
    """

    __slots__ = ("rows", "substitutions", "headers", "fixed_headers")

    def __init__(self, rows: list[tuple], *, substitutions: tuple[str, ...], headers: tuple[str, ...] = (),
                 fixed_headers: dict[str, str] | None = None):
        self.rows = rows
        self.substitutions = substitutions
        self.headers = headers
        self.fixed_headers = fixed_headers or {}

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return RecipientRows(self.rows[index], substitutions=self.substitutions, headers=self.headers,
                                 fixed_headers=self.fixed_headers)
        return self._recipient(self.rows[index])

    def __iter__(self) -> Iterator[Recipient]:
        return map(self._recipient, self.rows)

    def _recipient(self, row: tuple) -> Recipient:
        tags = len(self.substitutions)
        return Recipient(row[0], row[1], row[2], dict(zip(self.substitutions, row[3:3 + tags])),
                         {**dict(zip(self.headers, row[3 + tags:])), **self.fixed_headers})


@dataclass(frozen=True)
class Batch:
    from_email: str
    from_name: str
    subject: str
    html: str
    text: str
    recipients: Sequence[Recipient]  # a list, or an issue's RecipientRows
    headers: dict[str, str] = field(default_factory=dict)  # the same for every recipient (List-Id)
    categories: list[str] = field(default_factory=list)  # at most 10 (SendGrid)
    custom_args: dict[str, str] = field(default_factory=dict)  # batch-wide; delivery_id is added per recipient
    reply_to: str | None = None
    # DIGEST_DELIVERY=local (issue 19): the provider holds the batch until then (never more than the transport's
    # ``schedule_ahead``); None: now. ``batch_id`` groups an issue's held batches, so they can be cancelled.
    send_at: datetime | None = None
    batch_id: str | None = None

    def delivery_ids(self) -> list[int | None]:
        recipients = self.recipients
        if isinstance(recipients, RecipientRows):  # without making a Recipient of each
            return [row[0] for row in recipients.rows]
        return [recipient.delivery_id for recipient in recipients]


@dataclass(frozen=True)
class SendResult:
    message_id: str | None  # SendGrid's X-Message-Id (one per request); the outbox makes its own


class TransientError(Exception):
    """Worth retrying: 5xx, refused or dropped connection, timeout.

    ``ambiguous`` is True when the request may have reached the provider (a timeout or a connection
    dropped after the request was written): retrying may then deliver a second copy.
    """

    def __init__(self, message: str, *, ambiguous: bool = False):
        super().__init__(message)
        self.ambiguous = ambiguous


class RateLimited(TransientError):
    """429: wait until ``reset_at`` (epoch seconds, from X-RateLimit-Reset) before the next request."""

    def __init__(self, message: str, *, reset_at: float | None):
        super().__init__(message, ambiguous=False)
        self.reset_at = reset_at


class PermanentError(Exception):
    """The provider refused the batch for good (4xx other than 429); the message is the provider's."""


class Transport(Protocol):
    name: str
    # Times this transport waited, before a request, for a provider limit another sender recorded
    # (digest.send.ratelimit.SharedRateLimit); 0 for a transport that knows of no other sender.
    waits: int

    def send(self, batch: Batch) -> SendResult:
        """Hand the batch to the provider once: no retries here (the sender owns retry policy).

        Returns when the provider accepted the whole batch; raises `TransientError` (or `RateLimited`)
        when trying again may work, `PermanentError` when it will not.
        """
        ...

    def observe(self, connection) -> None:
        """Read what other senders recorded about the provider (a shared rate limit) on ``connection``, inside
        the transaction that leased the next batch, so the next `send` needs no query of its own."""
        ...

    # How far ahead of its ``send_at`` a batch is handed to the provider (SCHEDULE_AHEAD).
    schedule_ahead: timedelta

    def new_batch_id(self) -> str:
        """A new id to group an issue's scheduled batches under (SendGrid: ``POST /v3/mail/batch``).
        Raises like `send`."""
        ...

    def hold_scheduled(self, batch_id: str, status: str, *, change: bool = False) -> bool:
        """Tell the provider to "pause" or "cancel" what it still holds of ``batch_id`` (SendGrid: up to 10 minutes
        before each batch's ``send_at``); ``change``: the batch has a status already, this replaces it. True when
        the provider took it, False when this transport cannot hold back what it was given. Raises like `send`."""
        ...

    def release_scheduled(self, batch_id: str) -> bool:
        """Lift a pause of ``batch_id``: what the provider holds goes out at its time again. Like `hold_scheduled`."""
        ...

    def close(self) -> None:
        """Release connections; a transport may be used again after."""
        ...


# SendGrid holds a batch for its send_at at most 72 hours; we ask at most 71 ahead, an hour's margin for clocks and
# retries (a send_at past its limit is refused, and the whole batch with it).
HOLD_LIMIT = timedelta(hours=72)
SCHEDULE_AHEAD = HOLD_LIMIT - timedelta(hours=1)


class Alone:
    """For a transport that shares nothing with other senders: nothing to observe, never waits for them; it holds
    a batch for its ``send_at`` as long as SendGrid does, and cannot take one back."""

    waits = 0
    schedule_ahead = SCHEDULE_AHEAD

    def new_batch_id(self) -> str:
        """See `Transport`."""
        return f"local-{uuid.uuid4().hex}"

    def hold_scheduled(self, batch_id: str, status: str, *, change: bool = False) -> bool:
        """See `Transport`."""
        return False

    def release_scheduled(self, batch_id: str) -> bool:
        """See `Transport`."""
        return False

    def observe(self, connection) -> None:
        """See `Transport`."""

    def close(self) -> None:
        """See `Transport`."""


def fill(text: str, substitutions: dict[str, str]) -> str:
    """Replace substitution tags the way SendGrid does: plain text replacement of each key."""
    for key, value in substitutions.items():
        text = text.replace(key, value)
    return text
