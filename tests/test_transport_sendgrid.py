"""SendGridTransport through the real `sendgrid` client against a local SendGrid-compatible server."""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.request

import pytest

from digest.transports import Batch, PermanentError, RateLimited, Recipient, TransientError
from digest.transports.base import RecipientRows
from digest.transports.sendgrid import SendGridTransport, build_payload, payload_text
from tests.sendgrid_server import FakeSendGrid, FaultRates, error_body


def recipient(n: int, **overrides) -> Recipient:
    fields = dict(
        delivery_id=100 + n,
        email=f"reader{n}@example.com",
        name=f"Reader {n}",
        substitutions={"[%unsub%]": f"https://verdicts.example/u/token{n}", "[%name%]": f"Reader {n}"},
        headers={
            "List-Unsubscribe": f"<https://verdicts.example/u/token{n}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
    )
    return Recipient(**{**fields, **overrides})


def batch(recipients: list[Recipient] | None = None, **overrides) -> Batch:
    fields = dict(
        from_email="verdicts@example.com",
        from_name="Weekly AI Tool Verdicts",
        subject="This week for [%name%]",
        html="<p>Hi [%name%]</p><a href='[%unsub%]'>Unsubscribe</a>",
        text="Hi [%name%]\nUnsubscribe: [%unsub%]",
        recipients=recipients if recipients is not None else [recipient(n) for n in range(3)],
        headers={"List-Id": "Weekly AI Tool Verdicts <weekly.verdicts.example>"},
        categories=["digest"],
        custom_args={"issue": "2026-W05"},
    )
    return Batch(**{**fields, **overrides})


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def raw_post(server: FakeSendGrid, body: dict) -> tuple[int, dict | None]:
    request = urllib.request.Request(
        f"{server.url}/v3/mail/send",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, None
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_three_recipients_are_sent_in_one_request_in_order(fake_sendgrid, sendgrid_transport):
    """A 3-recipient batch is one accepted request: personalizations in order, each with its own data."""
    result = sendgrid_transport.send(batch())

    assert fake_sendgrid.requests == 1
    assert result.message_id == fake_sendgrid.message_ids[0]
    [body] = fake_sendgrid.accepted
    people = body["personalizations"]
    assert [p["to"] for p in people] == [[{"email": f"reader{n}@example.com", "name": f"Reader {n}"}] for n in range(3)]
    # The request's own custom_args once, each recipient's delivery id with them: SendGrid merges the two in events.
    assert body["custom_args"] == {"issue": "2026-W05"}
    assert [p["custom_args"] for p in people] == [{"delivery_id": str(100 + n)} for n in range(3)]
    assert people[2]["substitutions"]["[%unsub%]"] == "https://verdicts.example/u/token2"
    assert people[1]["headers"]["List-Unsubscribe"] == "<https://verdicts.example/u/token1>"
    assert people[1]["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["headers"] == {"List-Id": "Weekly AI Tool Verdicts <weekly.verdicts.example>"}
    assert body["from"] == {"email": "verdicts@example.com", "name": "Weekly AI Tool Verdicts"}
    assert "mail_settings" not in body


def test_test_send_without_delivery_id_or_name_omits_them(fake_sendgrid, sendgrid_transport):
    """A test send (no delivery id, no name) carries neither a delivery_id nor an empty name."""
    sendgrid_transport.send(batch([recipient(0, delivery_id=None, name="")], custom_args={}))

    [person] = fake_sendgrid.accepted[0]["personalizations"]
    assert person["to"] == [{"email": "reader0@example.com"}]
    assert "custom_args" not in person


def test_sandbox_mode_is_answered_200_and_not_delivered(fake_sendgrid):
    """Sandbox mode sets mail_settings.sandbox_mode; the server validates it, answers 200, delivers nothing."""
    transport = SendGridTransport(api_key=fake_sendgrid.api_key, host=fake_sendgrid.url, timeout=2, sandbox=True)

    result = transport.send(batch())

    assert result.message_id is None
    assert fake_sendgrid.accepted == []
    assert fake_sendgrid.sandboxed[0]["mail_settings"] == {"sandbox_mode": {"enable": True}}


def test_429_is_rate_limited_with_the_reset_time(fake_sendgrid, sendgrid_transport):
    """A 429 becomes RateLimited carrying X-RateLimit-Reset as epoch seconds."""
    fake_sendgrid.script([("status", 429, {"X-RateLimit-Reset": "1769990400"})])

    with pytest.raises(RateLimited) as caught:
        sendgrid_transport.send(batch())

    assert caught.value.reset_at == 1769990400.0
    assert caught.value.ambiguous is False
    assert fake_sendgrid.accepted == []


def test_503_is_transient_and_not_ambiguous(fake_sendgrid, sendgrid_transport):
    """A 503 answer means not sent: TransientError, safe to retry."""
    fake_sendgrid.script([("status", 503, {})])

    with pytest.raises(TransientError) as caught:
        sendgrid_transport.send(batch())

    assert not isinstance(caught.value, RateLimited)
    assert caught.value.ambiguous is False
    assert str(caught.value).startswith("503: ")


def test_invalid_address_is_refused_with_sendgrids_message(fake_sendgrid, sendgrid_transport):
    """An invalid address fails the published schema: PermanentError naming the field, without the API key."""
    recipients = [recipient(0), recipient(1, email="not-an-address")]

    with pytest.raises(PermanentError) as caught:
        sendgrid_transport.send(batch(recipients))

    assert str(caught.value) == "400: personalizations.1.to.0.email: Does not contain a valid address."
    assert fake_sendgrid.api_key not in str(caught.value)
    assert fake_sendgrid.accepted == []


def test_provider_errors_are_joined_in_the_message(fake_sendgrid, sendgrid_transport):
    """A 400 with several SendGrid errors keeps each one, field first, in order."""
    body = error_body(("The from address does not match a verified Sender Identity.", "from"),
                      ("Invalid batch id", None))
    fake_sendgrid.script([("status", 400, {}, body)])

    with pytest.raises(PermanentError, match=r"^400: from: The from address .*; Invalid batch id$"):
        sendgrid_transport.send(batch())


def test_wrong_api_key_is_permanent_and_not_echoed(fake_sendgrid):
    """A 401 is permanent, and the rejected key does not appear in the error."""
    transport = SendGridTransport(api_key="SG.wrong-key", host=fake_sendgrid.url, timeout=2)

    with pytest.raises(PermanentError, match="^401: ") as caught:
        transport.send(batch())

    assert "SG.wrong-key" not in str(caught.value)


def test_stall_longer_than_the_timeout_is_ambiguous_within_the_timeout(fake_sendgrid):
    """A server that accepts then stalls past the timeout: ambiguous TransientError after ~timeout seconds."""
    transport = SendGridTransport(api_key=fake_sendgrid.api_key, host=fake_sendgrid.url, timeout=0.5)
    fake_sendgrid.script([("stall", 2)])

    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        transport.send(batch())

    assert time.monotonic() - started < 1.5  # the client's own timeout, not the server's 2 s
    assert caught.value.ambiguous is True
    assert len(fake_sendgrid.accepted) == 1  # the case that makes it ambiguous: it was accepted


def test_dropped_connection_is_ambiguous(fake_sendgrid, sendgrid_transport):
    """A connection closed without an answer after the request was written is ambiguous."""
    fake_sendgrid.script([("drop",)])

    with pytest.raises(TransientError) as caught:
        sendgrid_transport.send(batch())

    assert caught.value.ambiguous is True
    assert fake_sendgrid.requests == 1


def test_accepted_then_dropped_is_ambiguous(fake_sendgrid, sendgrid_transport):
    """Accepted, then the connection drops before the answer: ambiguous, and the batch is in fact accepted."""
    fake_sendgrid.script([("accept_then_drop",)])

    with pytest.raises(TransientError) as caught:
        sendgrid_transport.send(batch())

    assert caught.value.ambiguous is True
    assert len(fake_sendgrid.accepted) == 1


def test_refused_connection_is_not_ambiguous():
    """Nothing listening on the port: the request never left, TransientError not ambiguous."""
    transport = SendGridTransport(api_key="SG.key", host=f"http://127.0.0.1:{closed_port()}", timeout=2)

    with pytest.raises(TransientError) as caught:
        transport.send(batch())

    assert caught.value.ambiguous is False


def test_scripted_faults_are_one_shot(fake_sendgrid, sendgrid_transport):
    """After a scripted 503 the next request is handled normally."""
    fake_sendgrid.script([("status", 503, {})])

    with pytest.raises(TransientError):
        sendgrid_transport.send(batch())
    result = sendgrid_transport.send(batch())

    assert result.message_id == fake_sendgrid.message_ids[0]
    assert fake_sendgrid.requests == 2


@pytest.mark.parametrize(
    "broken",
    [
        lambda: batch(headers={"List-Id": "x\r\nBcc: victim@example.com"}),
        lambda: batch([recipient(0, headers={"List-Unsubscribe": "<https://u>\nBcc: victim@example.com"})]),
        lambda: batch([recipient(0, headers={"X-Bad\r\nBcc": "victim@example.com"})]),
        lambda: batch(subject="Hello\r\nBcc: victim@example.com"),
    ],
    ids=["batch header value", "recipient header value", "header name", "subject"],
)
def test_cr_or_lf_in_a_header_is_refused_before_any_request(fake_sendgrid, sendgrid_transport, broken):
    """CR or LF in a header name or value is a programming error, raised before anything is sent."""
    with pytest.raises(ValueError, match="CR or LF"):
        sendgrid_transport.send(broken())

    assert fake_sendgrid.requests == 0


@pytest.mark.parametrize("name", ["Reply-To", "subject", "CC", "Content-Type", "DKIM-Signature"])
def test_reserved_headers_are_refused(fake_sendgrid, sendgrid_transport, name):
    """Headers SendGrid does not let us override are refused, whatever their case."""
    with pytest.raises(ValueError, match="reserved"):
        sendgrid_transport.send(batch([recipient(0, headers={name: "x"})]))

    assert fake_sendgrid.requests == 0


def test_more_than_1000_recipients_is_refused(fake_sendgrid, sendgrid_transport):
    """1001 recipients exceed SendGrid's per-request limit: ValueError, no request."""
    with pytest.raises(ValueError, match="1001 recipients"):
        sendgrid_transport.send(batch([recipient(n) for n in range(1001)]))

    assert fake_sendgrid.requests == 0


def test_1000_recipients_are_accepted(fake_sendgrid, sendgrid_transport):
    """Exactly 1000 recipients is within the limit and the server accepts it."""
    sendgrid_transport.send(batch([recipient(n) for n in range(1000)]))

    assert len(fake_sendgrid.accepted[0]["personalizations"]) == 1000


def test_oversized_substitutions_are_refused(fake_sendgrid, sendgrid_transport):
    """Substitutions over 10,000 bytes for one recipient are refused before sending."""
    big = recipient(0, substitutions={"[%name%]": "é" * 5000})  # 10,000 bytes of UTF-8 value alone

    with pytest.raises(ValueError, match="substitutions"):
        sendgrid_transport.send(batch([big]))

    assert fake_sendgrid.requests == 0


def test_more_than_10_categories_is_refused(sendgrid_transport):
    """SendGrid takes at most 10 categories."""
    with pytest.raises(ValueError, match="categories"):
        sendgrid_transport.send(batch(categories=[f"c{n}" for n in range(11)]))


def test_the_payload_passes_the_published_schema_by_raw_post(fake_sendgrid):
    """The transport's payload, posted by plain urllib, is accepted by the schema-checking server."""
    payload = build_payload(batch(reply_to="editor@example.com"))

    assert raw_post(fake_sendgrid, payload) == (202, None)


def _too_many_recipients(body: dict) -> None:
    body["personalizations"] = [{"to": [{"email": f"r{n}@example.com"}]} for n in range(1001)]


@pytest.mark.parametrize(
    ("break_it", "field"),
    [
        (lambda body: body.pop("from"), None),
        (lambda body: body["personalizations"][0]["to"][0].update(email="nobody"), "personalizations.0.to.0.email"),
        (lambda body: body.update(categories=[f"c{n}" for n in range(11)]), "categories"),
        (lambda body: body["personalizations"][0]["headers"].update(To="x@example.com"),
         "personalizations.0.headers.To"),
        (lambda body: body["headers"].update({"List-Id": "a\r\nb"}), "headers.List-Id"),
        (_too_many_recipients, "personalizations"),
        (lambda body: body["personalizations"][0]["substitutions"].update(big="x" * 10_000),
         "personalizations.0.substitutions"),
        (lambda body: body["personalizations"][0]["to"].append({"email": "READER0@example.com"}),
         "personalizations.0.to"),
        (lambda body: body.update(reply_to={"email": "a@example.com"}, reply_to_list=[{"email": "b@example.com"}]),
         "reply_to"),
        (lambda body: body["content"].reverse(), "content.0.type"),
    ],
    ids=["no from", "bad email", "11 categories", "reserved header", "CRLF header", "1001 recipients",
         "substitutions bytes", "duplicate address", "reply_to and list", "html before text"],
)
def test_the_server_rejects_broken_payloads(fake_sendgrid, break_it, field):
    """The fake server's validation can fail: each broken payload gets a SendGrid-shaped 400 naming the field."""
    body = build_payload(batch())
    break_it(body)

    status, answer = raw_post(fake_sendgrid, body)

    assert status == 400
    assert field in [error["field"] for error in answer["errors"]]
    assert fake_sendgrid.accepted == []


def test_random_faults_are_drawn_at_the_given_rates():
    """Random fault mode: with a 100% server-error rate every request is a 503; with 0% none is."""
    with FakeSendGrid(faults=FaultRates(server_error=1.0), seed=1) as server:
        transport = SendGridTransport(api_key=server.api_key, host=server.url, timeout=2)
        for _ in range(3):
            with pytest.raises(TransientError, match="^503: "):
                transport.send(batch())
        assert server.accepted == []
    with FakeSendGrid(faults=FaultRates(), seed=1) as server:
        SendGridTransport(api_key=server.api_key, host=server.url, timeout=2).send(batch())
        assert len(server.accepted) == 1


def test_random_faults_are_reproducible_with_a_seed():
    """The same seed draws the same sequence of faults, and every kind with a non-zero rate appears."""
    rates = FaultRates(rate_limit=0.3, server_error=0.3, drop=0.2)

    def kinds(seed: int) -> list[tuple]:
        rng = random.Random(seed)
        return [action[:2] if action else ("ok",) for action in (rates.draw(rng) for _ in range(50))]

    assert kinds(7) == kinds(7)
    assert kinds(7) != kinds(8)
    assert set(kinds(7)) == {("ok",), ("status", 429), ("status", 503), ("drop",)}


def test_a_body_over_30_mb_is_refused_with_413(fake_sendgrid):
    """The server enforces SendGrid's 30 MB request limit."""
    body = build_payload(batch())
    body["content"][1]["value"] = "x" * (30 * 1024 * 1024)

    status, answer = raw_post(fake_sendgrid, body)

    assert status == 413
    assert answer["errors"][0]["message"].startswith("Payload Too Large")


# -- an issue's batch: RecipientRows, written to JSON straight from its rows (digest.transports.sendgrid.payload_text)

def as_rows(recipients: list[Recipient]) -> RecipientRows:
    """The same recipients as an issue's batch carries them: one tuple each (they share tags and headers)."""
    tags, names = tuple(recipients[0].substitutions), tuple(recipients[0].headers)
    return RecipientRows([(r.delivery_id, r.email, r.name, *r.substitutions.values(), *r.headers.values())
                          for r in recipients], substitutions=tags, headers=names)


AWKWARD_NAMES = ["Reader 1", "", "José Müller", 'Ann "the critic" O\'Neil', "Back\\slash", "A & B <Co>", "李雷",
                 "{0} {braces}", "Tab\there"]


def test_an_issue_batch_written_from_its_rows_is_the_payload_of_its_recipients(fake_sendgrid, sendgrid_transport):
    """Rows written as text make the very body build_payload makes of the same recipients — plain rows through
    the template, the rest (non-ASCII, quotes, backslashes, braces, a tab, no name) value by value — and the
    server, checking SendGrid's published schema, takes it."""
    people = [recipient(n, name=name, substitutions={"[%unsub%]": f"https://verdicts.example/u/t{n}", "[%name%]": name})
              for n, name in enumerate(AWKWARD_NAMES)]
    rows = batch(as_rows(people), send_at=None)

    assert json.loads(payload_text(rows)) == build_payload(batch(people))
    assert payload_text(rows).isascii()
    sendgrid_transport.send(rows)

    sent = fake_sendgrid.accepted[0]["personalizations"]
    assert [p["to"][0].get("name", "") for p in sent] == AWKWARD_NAMES
    assert [p["custom_args"]["delivery_id"] for p in sent] == [str(100 + n) for n in range(len(AWKWARD_NAMES))]


def test_rows_read_as_a_sequence_are_the_recipients_they_stand_for():
    """Any transport (the outbox, a test's) reads RecipientRows as the Recipients they stand for."""
    people = [recipient(n) for n in range(3)]
    rows = as_rows(people)

    assert list(rows) == people and rows[1] == people[1] and list(rows[1:]) == people[1:] and len(rows) == 3
    assert batch(rows).delivery_ids() == [100, 101, 102]


@pytest.mark.parametrize("field", ["email", "name", "header"])
def test_cr_or_lf_in_a_row_is_refused_before_any_request(fake_sendgrid, sendgrid_transport, field):
    """A row is checked as a Recipient is: CR or LF in an address, a name or a header value is refused."""
    bad = "x\r\nBcc: victim@example.com"
    broken = {"email": dict(email="a@example.com" + bad), "name": dict(name="Ann" + bad),
              "header": dict(headers={"List-Unsubscribe": "<https://u>" + bad,
                                      "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"})}[field]
    with pytest.raises(ValueError, match="CR or LF"):
        sendgrid_transport.send(batch(as_rows([recipient(0), recipient(1, **broken)])))

    assert fake_sendgrid.requests == 0


def test_a_reserved_header_in_rows_is_refused(fake_sendgrid, sendgrid_transport):
    with pytest.raises(ValueError, match="reserved"):
        sendgrid_transport.send(batch(as_rows([recipient(0, headers={"Reply-To": "x@example.com"})])))

    assert fake_sendgrid.requests == 0


def test_oversized_substitutions_in_a_row_are_refused(fake_sendgrid, sendgrid_transport):
    """Within the limit in characters, over it in bytes: the row is measured in UTF-8, as SendGrid counts."""
    people = [recipient(0), recipient(1, substitutions={"[%unsub%]": "u", "[%name%]": "é" * 5000})]

    with pytest.raises(ValueError, match="substitutions"):
        sendgrid_transport.send(batch(as_rows(people)))

    assert fake_sendgrid.requests == 0


def test_more_than_1000_rows_are_refused(fake_sendgrid, sendgrid_transport):
    with pytest.raises(ValueError, match="1001 recipients"):
        sendgrid_transport.send(batch(as_rows([recipient(n) for n in range(1001)])))

    assert fake_sendgrid.requests == 0


def test_the_server_refuses_a_body_that_is_not_json_as_sendgrid_does(fake_sendgrid):
    """The body's media type must be application/json (a charset parameter is fine): 415 otherwise."""
    def post(content_type: str) -> int:
        request = urllib.request.Request(f"{fake_sendgrid.url}/v3/mail/send", data=json.dumps(build_payload(batch())).encode(),
                                         headers={"Authorization": f"Bearer {fake_sendgrid.api_key}",
                                                  "Content-Type": content_type})
        try:
            return urllib.request.urlopen(request, timeout=10).status
        except urllib.error.HTTPError as error:
            return error.code

    assert post("text/plain") == 415
    assert post("application/json; charset=utf-8") == 202
