"""OutboxTransport: one RFC 5322 .eml file per recipient, as SendGrid would deliver it."""

from __future__ import annotations

import email.policy
import re
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from digest.transports import Batch, Recipient
from digest.transports.outbox import OutboxTransport


def recipient(key: str, **overrides) -> Recipient:
    fields = dict(
        delivery_id={"a": 1, "b": 2}.get(key, 9),
        email=f"{key}@example.com",
        name=f"Reader {key.upper()}",
        substitutions={"[%unsub%]": f"https://verdicts.example/u/token-{key}", "[%name%]": f"Reader {key.upper()}"},
        headers={
            "List-Unsubscribe": f"<https://verdicts.example/u/token-{key}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    return Recipient(**{**fields, **overrides})


def batch(recipients: list[Recipient], **overrides) -> Batch:
    fields = dict(
        from_email="verdicts@example.com",
        from_name="Zoë's AI Verdicts",
        subject="Verdicts for [%name%]",
        html="<p>Hi [%name%] — <a href='[%unsub%]'>unsubscribe</a></p>",
        text="Hi [%name%] — unsubscribe: [%unsub%]",
        recipients=recipients,
        headers={"List-Id": "Weekly AI Tool Verdicts <weekly.verdicts.example>"},
        reply_to="editor@example.com",
    )
    return Batch(**{**fields, **overrides})


def read(path: Path) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(path.read_bytes())


def sent_to(directory: Path) -> dict[str, EmailMessage]:
    messages = [read(path) for path in directory.glob("*.eml")]
    return {m["To"].addresses[0].addr_spec: m for m in messages}


def test_one_multipart_alternative_file_per_recipient(tmp_path):
    """Two recipients: two .eml files, each multipart/alternative with text/plain then text/html in UTF-8."""
    result = OutboxTransport(tmp_path).send(batch([recipient("a"), recipient("b")]))

    assert result.message_id.startswith("outbox-")
    files = sorted(tmp_path.iterdir())
    assert len(files) == 2 and all(f.suffix == ".eml" for f in files)
    for message in sent_to(tmp_path).values():
        assert message.get_content_type() == "multipart/alternative"
        parts = list(message.iter_parts())
        assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
        assert [p.get_content_charset() for p in parts] == ["utf-8", "utf-8"]
        assert "—" in parts[0].get_content()


def test_substitutions_are_filled_per_recipient(tmp_path):
    """Recipient A's file carries A's unsubscribe token in subject, text and HTML, never B's."""
    OutboxTransport(tmp_path).send(batch([recipient("a"), recipient("b")]))

    a = sent_to(tmp_path)["a@example.com"]
    text, html = (part.get_content() for part in a.iter_parts())
    assert a["Subject"] == "Verdicts for Reader A"
    assert "token-a" in text and "token-a" in html
    assert "token-b" not in a.as_string()
    assert "[%" not in text + html


def test_list_headers_and_addresses_are_written(tmp_path):
    """List-Unsubscribe (per recipient), List-Unsubscribe-Post, List-Id, From with an encoded name, To, Reply-To."""
    OutboxTransport(tmp_path).send(batch([recipient("a"), recipient("b")]))

    b = sent_to(tmp_path)["b@example.com"]
    assert b["List-Unsubscribe"] == "<https://verdicts.example/u/token-b>"
    assert b["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert b["List-Id"] == "Weekly AI Tool Verdicts <weekly.verdicts.example>"
    assert b["From"].addresses[0].display_name == "Zoë's AI Verdicts"
    assert b["From"].addresses[0].addr_spec == "verdicts@example.com"
    assert b["To"].addresses[0].display_name == "Reader B"
    assert b["Reply-To"] == "editor@example.com"
    assert b["X-Digest-Delivery-Id"] == "2"
    assert b["Message-ID"] and b["Date"] and b["MIME-Version"] == "1.0"


def test_test_send_has_no_delivery_id(tmp_path):
    """A test send (delivery_id None) is named test-… and carries no X-Digest-Delivery-Id."""
    OutboxTransport(tmp_path).send(batch([recipient("me", delivery_id=None)]))

    [path] = tmp_path.iterdir()
    assert path.name.startswith("test-me-")
    assert read(path)["X-Digest-Delivery-Id"] is None


def test_a_hostile_address_stays_inside_the_directory(tmp_path):
    """An address with path components produces a plain file name inside the outbox directory."""
    outbox = tmp_path / "outbox"

    OutboxTransport(outbox).send(batch([recipient("x", email="../../etc/x@example.com")]))

    [path] = outbox.iterdir()
    assert re.fullmatch(r"9-[A-Za-z0-9._-]+\.eml", path.name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox"]
    assert read(path)["To"].addresses[0].username == "../../etc/x"


def test_the_directory_is_created_when_missing(tmp_path):
    """A nested directory that does not exist yet is created."""
    outbox = tmp_path / "a" / "b"

    OutboxTransport(outbox).send(batch([recipient("a")]))

    assert len(list(outbox.glob("*.eml"))) == 1


@pytest.mark.parametrize(
    "broken",
    [
        lambda: batch([recipient("a"), recipient("b", headers={"List-Unsubscribe": "<https://u>\r\nBcc: v@x.com"})]),
        lambda: batch([recipient("a")], headers={"List-Id": "x\nBcc: v@x.com"}),
        lambda: batch([recipient("a")], subject="Hi\r\nBcc: v@x.com"),
        lambda: batch([recipient("a", name="A\r\nBcc: v@x.com")]),
    ],
    ids=["recipient header", "batch header", "subject", "recipient name"],
)
def test_cr_or_lf_in_a_header_is_refused_and_nothing_is_written(tmp_path, broken):
    """CR/LF in any header value raises ValueError and writes no file, not even for the valid recipient."""
    with pytest.raises(ValueError, match="CR or LF"):
        OutboxTransport(tmp_path).send(broken())

    assert list(tmp_path.iterdir()) == []


def test_a_header_the_transport_sets_itself_is_refused(tmp_path):
    """A batch header named like one the transport sets (From) would duplicate it: ValueError."""
    with pytest.raises(ValueError, match="From"):
        OutboxTransport(tmp_path).send(batch([recipient("a")], headers={"From": "x@example.com"}))


# -- internationalised addresses (issue 13, item 8) -------------------------------------------------------------

def header_line(raw: bytes, name: bytes) -> bytes:
    return next(line for line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n") if line.startswith(name + b": "))


def test_a_non_ascii_local_part_is_written_per_rfc_6532(tmp_path):
    """jösé@bücher.example: To in UTF-8 with the domain as its A-label, never an encoded word; it parses back"""
    OutboxTransport(tmp_path).send(batch([recipient("a", email="jösé@bücher.example", name="Zoë")]))

    [path] = tmp_path.iterdir()
    raw = path.read_bytes()
    assert header_line(raw, b"To") == "To: Zoë <jösé@xn--bcher-kva.example>".encode()
    assert b"=?" not in header_line(raw, b"To")
    parsed = email.message_from_string(raw.decode("utf-8"), policy=email.policy.SMTPUTF8)
    [to] = parsed["To"].addresses
    assert (to.username, to.domain, to.display_name) == ("jösé", "xn--bcher-kva.example", "Zoë")
    # Python's parser flags any non-ASCII local part, which RFC 6532 allows: that is the only remark.
    assert {type(d).__name__ for d in parsed["To"].defects} == {"NonASCIILocalPartDefect"}
    assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]


def test_a_non_ascii_domain_is_written_as_its_a_label(tmp_path):
    """ada@bücher.example: an all-ASCII To with the punycode domain, so any mail system can carry it"""
    OutboxTransport(tmp_path).send(batch([recipient("a", email="ada@bücher.example")]))

    [path] = tmp_path.iterdir()
    raw = path.read_bytes()
    assert header_line(raw, b"To") == b"To: Reader A <ada@xn--bcher-kva.example>"
    assert read(path)["To"].addresses[0].addr_spec == "ada@xn--bcher-kva.example"
    assert raw.split(b"\r\n\r\n", 1)[0].isascii(), "an ASCII address needs no UTF-8 header"


def test_a_domain_that_is_no_valid_idn_is_refused_and_nothing_is_written(tmp_path):
    """a domain IDNA cannot encode (a label of 64+ characters after mapping) raises ValueError naming the address"""
    with pytest.raises(ValueError, match="is not a valid internationalised domain"):
        OutboxTransport(tmp_path).send(batch([recipient("a"), recipient("b", email="b@" + "ü" * 70 + ".example")]))

    assert list(tmp_path.iterdir()) == []
