"""SendGrid's v3 Mail Send API: one `POST /v3/mail/send` per `Batch`, one personalization per recipient.

With digest.transports.sendgrid_events (its Event Webhook), the only module that knows SendGrid. Limits and reserved headers come from SendGrid's published schema
(tests/data/sendgrid/tsg_mail_v3.json) and its docs; a payload that breaks them is a programming error
here (`ValueError`), raised before any request, rather than a 400 discovered mid-send.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
from dataclasses import replace
from typing import Literal

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from digest.transports.base import (
    Alone, Batch, PermanentError, RateLimited, Recipient, RecipientRows, SendResult, TransientError,
)
from digest.transports.safe_links import UnsafeLinks, unsafe_links_message

MAX_RECIPIENTS = 1000  # per request, to+cc+bcc over all personalizations
MAX_CATEGORIES = 10
MAX_ARGS_BYTES = 10_000  # substitutions, and custom_args, per personalization
DELIVERY_ARG_BYTES = len("delivery_id") + 19  # the one custom arg each personalization adds: a delivery id
# "You may not override the following headers" (schema, personalizations[].headers and headers).
# We count opens and clicks ourselves (digest.track); SendGrid's own tracking, on by default in an account, would
# rewrite every link (our /u/ and /c/ too) through its redirect, count each click twice and add its own pixel and
# footer. Field names as in the schema's tracking_settings; sent per request, so a batch of 1000 pays it once.
TRACKING_OFF = {"click_tracking": {"enable": False, "enable_text": False},
                "open_tracking": {"enable": False},
                "subscription_tracking": {"enable": False}}
RESERVED_HEADERS = frozenset(
    name.lower()
    for name in ("x-sg-id", "x-sg-eid", "received", "dkim-signature", "Content-Type",
                 "Content-Transfer-Encoding", "To", "From", "Subject", "Reply-To", "CC", "BCC")
)


class SendGridTransport(Alone):
    """See `Transport`. Sends through the official `sendgrid` client, with a timeout on every request."""

    name = "sendgrid"

    def __init__(self, *, api_key: str, host: str, timeout: float, sandbox: bool = False,
                 tracking: Literal["off", "account"] = "off", base_url: str | None = None):
        if not api_key:
            # the client would silently fall back to $SENDGRID_API_KEY
            raise ValueError("SendGridTransport: api_key is empty")
        if not timeout or timeout <= 0:
            raise ValueError(f"SendGridTransport: timeout must be > 0 seconds, got {timeout!r}")
        self._client = SendGridAPIClient(api_key, host=host)
        # The Mail Send body goes as JSON text we write (payload_text); the client sends a body as it is only
        # when its Content-Type is not exactly application/json (else it json.dumps it). Its headers are shared
        # by every child client of one root, so this one has a root of its own.
        self._send_client = SendGridAPIClient(api_key, host=host)
        self._send_client.client.request_headers["Content-Type"] = JSON_TEXT
        # The client has no default timeout: a stalled connection would hang a send worker for ever.
        # Client.timeout is copied into every child client (`client.mail.send`) and handed to urlopen.
        self._client.client.timeout = self._send_client.client.timeout = timeout
        self._sandbox = sandbox
        self._tracking = tracking
        # Outside sandbox mode, links to a base URL readers cannot reach (or not over https) are never sent:
        # the entry points refuse before doing anything (digest.transports.safe_links); this is the last word.
        self.refusal = None if sandbox or base_url is None else unsafe_links_message(base_url)

    def send(self, batch: Batch) -> SendResult:
        """See `Transport`."""
        if self.refusal:
            raise UnsafeLinks(self.refusal)
        payload = payload_text(batch, sandbox=self._sandbox, tracking=self._tracking)
        try:
            response = self._send_client.client.mail.send.post(request_body=payload)
        except HTTPError as error:
            raise _http_error(error) from None
        except (OSError, http.client.HTTPException) as error:
            raise _network_error(error) from error
        if response.status_code not in (200, 202):  # 200: sandbox mode
            raise PermanentError(f"{response.status_code}: unexpected answer to POST /v3/mail/send")
        return SendResult(message_id=response.headers.get("X-Message-Id"))

    def new_batch_id(self) -> str:
        """See `Transport`. ``POST /v3/mail/batch``."""
        answer = self._call(lambda: self._client.client.mail.batch.post(), "POST /v3/mail/batch")
        try:
            batch_id = json.loads(answer.body)["batch_id"]
        except (ValueError, TypeError, KeyError) as exc:
            raise TransientError(f"POST /v3/mail/batch answered without a batch_id: {exc}") from None
        try:
            return _url_part(batch_id if isinstance(batch_id, str) else "")
        except ValueError:
            raise TransientError(f"POST /v3/mail/batch answered an unusable batch_id {batch_id!r}") from None

    def hold_scheduled(self, batch_id: str, status: str, *, change: bool = False) -> bool:
        """See `Transport`. ``POST /v3/user/scheduled_sends`` (``change``: ``PATCH …/{batch_id}``)."""
        if status not in ("pause", "cancel"):
            raise ValueError(f"hold_scheduled: status must be pause or cancel, not {status!r}")
        sends = self._client.client.user.scheduled_sends
        if change:
            self._call(lambda: sends._(_url_part(batch_id)).patch(request_body={"status": status}),
                       "PATCH /v3/user/scheduled_sends/{batch_id}")
        else:
            self._call(lambda: sends.post(request_body={"batch_id": _url_part(batch_id), "status": status}),
                       "POST /v3/user/scheduled_sends")
        return True

    def release_scheduled(self, batch_id: str) -> bool:
        """See `Transport`. ``DELETE /v3/user/scheduled_sends/{batch_id}``."""
        sends = self._client.client.user.scheduled_sends
        self._call(lambda: sends._(_url_part(batch_id)).delete(), "DELETE /v3/user/scheduled_sends/{batch_id}")
        return True

    def _call(self, request, what: str):
        if self.refusal:
            raise UnsafeLinks(self.refusal)
        try:
            response = request()
        except HTTPError as error:
            raise _http_error(error) from None
        except (OSError, http.client.HTTPException) as error:
            raise _network_error(error) from error
        if not 200 <= response.status_code < 300:
            raise PermanentError(f"{response.status_code}: unexpected answer to {what}")
        return response

    def close(self) -> None:
        """See `Transport`. Nothing to release: the client opens a connection per request."""


def build_payload(batch: Batch, *, sandbox: bool = False, tracking: Literal["off", "account"] = "off") -> dict:
    """The Mail Send body as a plain dict (the `Mail` helper would reverse the personalizations); with
    ``tracking="account"`` no tracking_settings, so the account's own apply (DIGEST_SENDGRID_TRACKING)."""
    if not batch.recipients:
        raise ValueError("batch has no recipients")
    if len(batch.recipients) > MAX_RECIPIENTS:
        raise ValueError(f"batch has {len(batch.recipients)} recipients; SendGrid takes at most {MAX_RECIPIENTS}")
    if len(batch.categories) > MAX_CATEGORIES:
        raise ValueError(f"batch has {len(batch.categories)} categories; SendGrid takes at most {MAX_CATEGORIES}")
    _check_line("subject", batch.subject)
    _check_line("from name", batch.from_name)
    payload: dict = {
        "personalizations": [_personalization(r) for r in batch.recipients],
        "from": _address(batch.from_email, batch.from_name),
        "subject": batch.subject,
        # text/plain first: SendGrid requires that order when both are present
        "content": [{"type": t, "value": v} for t, v in (("text/plain", batch.text), ("text/html", batch.html)) if v],
    }
    if batch.headers:
        payload["headers"] = _checked_headers("batch headers", batch.headers)
    if batch.categories:
        payload["categories"] = list(batch.categories)
    if batch.custom_args:  # once per request: SendGrid adds them to every recipient's events
        payload["custom_args"] = _checked_size("custom_args", batch.custom_args, room=MAX_ARGS_BYTES - DELIVERY_ARG_BYTES)
    if batch.reply_to:
        payload["reply_to"] = {"email": _check_line("reply_to", batch.reply_to)}
    if tracking == "off":
        payload["tracking_settings"] = {name: dict(value) for name, value in TRACKING_OFF.items()}
    if batch.send_at is not None:  # held until the reader's hour (DIGEST_DELIVERY=local): unix seconds
        payload["send_at"] = int(batch.send_at.timestamp())
    if batch.batch_id is not None:
        payload["batch_id"] = _url_part(batch.batch_id)
    if sandbox:
        payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return payload


def payload_text(batch: Batch, *, sandbox: bool = False, tracking: Literal["off", "account"] = "off") -> str:
    """The Mail Send body as JSON text (ASCII): `build_payload`'s, with an issue's `RecipientRows` written straight
    from their values (a million personalizations per send: no dict per recipient, and no encoder walking them)."""
    recipients = batch.recipients
    if not isinstance(recipients, RecipientRows) or not recipients:
        return json.dumps(build_payload(batch, sandbox=sandbox, tracking=tracking))
    if len(recipients) > MAX_RECIPIENTS:
        raise ValueError(f"batch has {len(recipients)} recipients; SendGrid takes at most {MAX_RECIPIENTS}")
    # Everything but the personalizations, checked and built as for any batch (with its first recipient).
    envelope = build_payload(replace(batch, recipients=[recipients[0]]), sandbox=sandbox, tracking=tracking)
    del envelope["personalizations"]
    return '{"personalizations":[' + ",".join(_rows_text(recipients)) + "]," + json.dumps(envelope)[1:]


JSON_TEXT = "application/json; charset=utf-8"  # what payload_text writes (ASCII, so UTF-8 too)


def _rows_text(recipients: RecipientRows) -> list[str]:
    """Each row's personalization as JSON text. A row of plain values (printable ASCII without a quote or
    backslash: nearly every one) goes into a template made once per batch; any other row is checked and
    encoded value by value (`_row_values`), as build_payload would check it."""
    tags, names = recipients.substitutions, recipients.headers
    _checked_headers("recipients' headers", {**dict.fromkeys(names, ""), **recipients.fixed_headers})
    size = sum(map(len, tags)) + DELIVERY_ARG_BYTES  # the tags' own bytes count against the limit (ASCII)
    fast, slow = _templates(recipients, '"'), _templates(recipients, "")
    out = []
    for row in recipients.rows:
        text = "".join(row[1:])
        if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text \
                and len(text) + size <= MAX_ARGS_BYTES and type(row[0]) is int:
            out.append(fast[not row[2]].format(*row))  # values as they are, between the template's quotes
        else:
            out.append(slow[not row[2]].format(*_row_values(row, tags, names)))
    return out


def _templates(recipients: RecipientRows, quote: str) -> tuple[str, str]:
    """A personalization as a str.format template over a row (with its name, without), each value between
    ``quote``s (the values go in as they are) or none (they go in as JSON already)."""
    tags, names = recipients.substitutions, recipients.headers
    slots = iter(range(3, 3 + len(tags) + len(names)))  # row[3:]: the tags' values, then the headers'

    def slot(n: int) -> str:
        return f"{quote}{{{n}}}{quote}"

    substitutions = [_braced(json.dumps(tag) + ":") + slot(next(slots)) for tag in tags]
    headers = [_braced(json.dumps(name) + ":") + slot(next(slots)) for name in names]
    headers += [_braced(json.dumps(name) + ":" + json.dumps(value)) for name, value in recipients.fixed_headers.items()]
    rest = (',"substitutions":{{' + ",".join(substitutions) + '}},"headers":{{' + ",".join(headers) + "}}"
            ',"custom_args":{{"delivery_id":"{0}"}}}}')
    return (f'{{{{"to":[{{{{"email":{slot(1)},"name":{slot(2)}}}}}]' + rest,
            f'{{{{"to":[{{{{"email":{slot(1)}}}}}]' + rest)


def _row_values(row: tuple, tags: tuple[str, ...], names: tuple[str, ...]) -> list:
    """One row's values as JSON text, checked as `_personalization` checks a `Recipient`."""
    delivery_id, email, name, *values = row
    if type(delivery_id) is not int:
        raise ValueError(f"recipient {email!r}: RecipientRows need a delivery id, not {delivery_id!r}")
    _address(email, name)
    substitutions = dict(zip(tags, values))
    _checked_size(lambda: f"recipient {email!r}: substitutions", substitutions)
    _checked_headers(lambda: f"recipient {email!r}: headers", dict(zip(names, values[len(tags):])))
    return [delivery_id, *map(json.dumps, (email, name, *values))]


def _braced(text: str) -> str:
    """``text`` as a literal part of a str.format template."""
    return text.replace("{", "{{").replace("}", "}}")


def _personalization(recipient: Recipient) -> dict:
    """One recipient's personalization: a million per send, so what is checked is checked cheaply, and a message
    is only made for what fails."""
    delivery_id, email, name, substitutions, headers = recipient
    if "\r" in email or "\n" in email or "\r" in name or "\n" in name:
        _address(email, name)  # raises, saying which
    out: dict = {"to": [{"email": email, "name": name} if name else {"email": email}]}
    if substitutions:
        out["substitutions"] = _checked_size(lambda: f"recipient {email!r}: substitutions", substitutions)
    if headers:
        out["headers"] = _checked_headers(lambda: f"recipient {email!r}: headers", headers)
    if delivery_id is not None:
        out["custom_args"] = {"delivery_id": str(delivery_id)}  # custom_args values must be strings
    return out


def _address(email: str, name: str) -> dict:
    _check_line("address", email)
    _check_line("name", name)
    return {"email": email, "name": name} if name else {"email": email}


def _url_part(batch_id: str) -> str:
    """A batch id as SendGrid makes them (letters, digits, "-", "_"): safe as a path segment and in a body."""
    if not batch_id or not all(c.isascii() and (c.isalnum() or c in "-_") for c in batch_id):
        raise ValueError(f"batch id {batch_id[:80]!r} is not one SendGrid makes")
    return batch_id


def _check_line(where: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{where}: {value!r} contains CR or LF (header injection)")
    return value


def _checked_headers(where, headers: dict[str, str]) -> dict[str, str]:
    """``headers`` when none is reserved or holds CR or LF; ``where``: a string, or a callable that makes it (only
    for the error: a batch checks a thousand recipients' headers)."""
    for name, value in headers.items():
        if "\r" in value or "\n" in value or name not in _FINE_NAMES:
            where = where() if callable(where) else where
            _check_line(f"{where}: header name", name)
            _check_line(f"{where}: header {name}", value)
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"{where}: {name} is reserved by SendGrid; set it through its own field")
            _FINE_NAMES.add(name)  # a fine name, checked once: every recipient has the same few
    return headers


_FINE_NAMES: set[str] = set()


def _checked_size(where, values: dict[str, str], *, room: int = MAX_ARGS_BYTES) -> dict[str, str]:
    """``values`` within SendGrid's "10,000 bytes" per personalization: the UTF-8 bytes of the keys and values (a
    request's own custom_args count against each personalization's, so they leave room for the delivery id).
    ``where`` as for `_checked_headers`."""
    if 4 * (sum(map(len, values)) + sum(map(len, values.values()))) <= room:
        return values  # at most 4 bytes a character: within the limit however it encodes (nearly always)
    size = sum(len(k.encode()) + len(v.encode()) for k, v in values.items())
    if size > room:
        where = where() if callable(where) else where
        raise ValueError(f"{where}: {size} bytes; SendGrid takes at most {room} per personalization")
    return values


def _http_error(error: HTTPError) -> Exception:
    status = error.status_code
    message = f"{status}: {_provider_message(error)}"
    if status == 429:
        return RateLimited(message, reset_at=_float_or_none(error.headers.get("X-RateLimit-Reset")))
    if status >= 500:
        # The server answered with a failure: not sent. Except 504: a gateway gave up waiting on a backend
        # that may have accepted the batch.
        return TransientError(message, ambiguous=status == 504)
    return PermanentError(message)


def _provider_message(error: HTTPError) -> str:
    """SendGrid's own words, from `{"errors": [{"message", "field", "help"}]}`."""
    try:
        errors = json.loads(error.body)["errors"]
        parts = [f"{e['field']}: {e['message']}" if e.get("field") else str(e["message"]) for e in errors]
    except (ValueError, TypeError, KeyError, IndexError):
        return f"{error.reason} (no SendGrid error body)"
    return "; ".join(parts) or str(error.reason)


def _network_error(error: BaseException) -> TransientError:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror)):
        return TransientError(f"SendGrid unreachable: {reason}", ambiguous=False)
    # A timeout, reset or half answer: the request may have been written and processed.
    return TransientError(f"no complete answer from SendGrid: {type(reason).__name__}: {reason}", ambiguous=True)


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
