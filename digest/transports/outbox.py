"""A local outbox: each recipient's email as an RFC 5322 `.eml` file, for previews and test sends.

The files are what SendGrid would deliver: substitutions filled per recipient (in subject, text and
HTML, never in headers), per-recipient List-Unsubscribe headers, text/plain before text/html.

Internationalised addresses: a domain is written in its ASCII form (IDNA 2008 A-labels, "xn--…"), valid
everywhere; a local part that is not ASCII has no ASCII form, so that message is written per RFC 6532
(UTF-8 header fields, the SMTPUTF8 policy). Never as RFC 2047 encoded words, which make an address invalid.
"""

from __future__ import annotations

import email.policy
import os
import re
import tempfile
import uuid
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import idna

from digest.transports.base import Alone, Batch, Recipient, SendResult, fill

# Set by this transport from the batch's own fields: a header of the same name would duplicate them.
OWN_HEADERS = frozenset(
    name.lower()
    for name in ("From", "To", "Cc", "Bcc", "Subject", "Date", "Message-ID", "MIME-Version", "Reply-To",
                 "Content-Type", "Content-Transfer-Encoding", "X-Digest-Delivery-Id")
)


class OutboxTransport(Alone):
    """See `Transport`. Writes one `.eml` per recipient into ``directory`` (created when missing); a batch with a
    ``send_at`` is written at once, dated when it is due (the outbox holds nothing back, so cannot cancel)."""

    name = "outbox"

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def send(self, batch: Batch) -> SendResult:
        """See `Transport`. Every message is built before the first file is written: all or nothing."""
        messages = [(recipient, _message(batch, recipient)) for recipient in batch.recipients]
        self.directory.mkdir(parents=True, exist_ok=True)
        for recipient, message in messages:
            _write_atomically(self.directory / _file_name(recipient), message.as_bytes())
        return SendResult(message_id=f"outbox-{uuid.uuid4().hex}")

    def close(self) -> None:
        """See `Transport`. Nothing to release."""


# CRLF line endings, as on the wire; header lines up to RFC 5322's 998 characters, so a long
# List-Unsubscribe URL stays on one line instead of being folded before its first word.
_POLICY = email.policy.SMTP.clone(max_line_length=998)
# Bodies are encoded as they are set, in quoted-printable lines of at most 76 characters (RFC 2045 6.7):
# 998-character body lines also read as spam (SpamAssassin LONG_INVISIBLE_TEXT, LONGLN_LOW_CONTRAST).
_BODY_POLICY = email.policy.SMTP.clone(max_line_length=76)
# The same for a message to or from a non-ASCII local part: UTF-8 header fields (RFC 6532).
_UTF8_POLICY, _UTF8_BODY_POLICY = _POLICY.clone(utf8=True), _BODY_POLICY.clone(utf8=True)


def message_for(batch: Batch, recipient: Recipient) -> EmailMessage:
    """The RFC 5322 message one recipient of ``batch`` gets (also `digest preview --format eml`)."""
    return _message(batch, recipient)


def _message(batch: Batch, recipient: Recipient) -> EmailMessage:
    sender, to = _address(batch.from_email, batch.from_name), _address(recipient.email, recipient.name)
    reply_to = _address(batch.reply_to, "") if batch.reply_to else None
    utf8 = not all(a.username.isascii() for a in (sender, to, reply_to) if a is not None)
    message = EmailMessage(policy=_UTF8_BODY_POLICY if utf8 else _BODY_POLICY)
    message["From"] = sender
    message["To"] = to
    message["Subject"] = _line("subject", fill(batch.subject, recipient.substitutions))
    # A batch held for its reader's hour (DIGEST_DELIVERY=local) is dated when it is due, as it would arrive.
    message["Date"] = formatdate(batch.send_at.timestamp() if batch.send_at else None, localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=sender.domain)  # no DNS lookup
    if reply_to is not None:
        message["Reply-To"] = reply_to
    for name, value in {**batch.headers, **recipient.headers}.items():
        if name.lower() in OWN_HEADERS:
            raise ValueError(f"header {name} is set by the transport itself; use the batch field instead")
        message[_line("header name", name)] = _line(f"header {name}", value)
    if recipient.delivery_id is not None:
        message["X-Digest-Delivery-Id"] = str(recipient.delivery_id)
    message.set_content(fill(batch.text, recipient.substitutions), charset="utf-8")
    message.add_alternative(fill(batch.html, recipient.substitutions), subtype="html", charset="utf-8")
    message.policy = _UTF8_POLICY if utf8 else _POLICY  # for writing: headers fold at 998 characters only
    return message


def _address(addr: str, name: str) -> Address:
    username, at, domain = _line("address", addr).rpartition("@")
    if not at or not username or not domain:
        raise ValueError(f"{addr!r} is not an email address")
    return Address(display_name=_line("name", name), username=username, domain=_ascii_domain(addr, domain))


def _ascii_domain(addr: str, domain: str) -> str:
    """``bücher.example`` as ``xn--bcher-kva.example`` (IDNA 2008 with UTS 46 mapping, as browsers do)."""
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"{addr!r}: the domain {domain!r} is not a valid internationalised domain ({exc})") from None


def _line(where: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError(f"{where}: {value!r} contains CR or LF (header injection)")
    return value


def _file_name(recipient: Recipient) -> str:
    # Only [A-Za-z0-9._-] from the address, after a prefix: never a path separator, never "." or "..".
    local = re.sub(r"[^A-Za-z0-9._-]", "_", recipient.email.rpartition("@")[0])[:40]
    prefix = "test" if recipient.delivery_id is None else recipient.delivery_id
    return f"{prefix}-{local}-{uuid.uuid4().hex[:8]}.eml"


def _write_atomically(path: Path, data: bytes) -> None:
    """A reader never sees half a file: write a temporary file beside it, then rename."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
