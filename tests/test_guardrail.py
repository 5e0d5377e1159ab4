"""The guardrail (issue 18, item 3): an issue whose Event Webhook reports bounces or spam reports past the
limits pauses, with its reason stored and logged and one alert email, on SQLite and PostgreSQL; and two
`digest worker` processes sending an issue stop within one batch each when the webhook trips it."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from itertools import count

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from digest.config import Settings
from digest.track.events import ProviderEvent, apply_provider_events
from digest.track.guardrail import Limits, check_issues, percent, verdict
from digest.transports import PermanentError
from digest.web import create_app
from storage.db import make_engine, session_scope
from storage.guardrail import IssueOutcomes, sending_issues
from storage.issue_state import cancel_issue, pause_issue, provider_batch_id, resume_issue
from storage.models import Delivery, DeliveryStatus, Issue, Segment, Subscriber
from tests.factories import RecordingTransport
from tests.fixtures_web import web_settings
from tests.sendgrid_server import FakeSendGrid
from tests.test_send_sendgrid import accepted_addresses, env_for
from tests.test_webhook import PUBLIC_KEY, post
from tests.test_workers import opened, start_worker, summary, wait_for

NOW = datetime(2026, 11, 30, 19, 0, tzinfo=timezone.utc)
LIMITS = Limits(min_events=500, max_bounce_rate=0.05, max_complaint_rate=0.001)
_ids = count(1)


def settings(db_url: str, **overrides) -> Settings:
    return Settings(**{"database_url": db_url, "secret_key": "guardrail-test-secret-0123456789",
                       "transport": "outbox", "alert_email": "ops@example.com", **overrides})


def an_issue(engine, recipients: int, week: str = "2026-W48") -> list[tuple[int, str]]:
    """An issue going out to ``recipients`` new readers: (delivery id, address) of each, all sent."""
    with session_scope(engine) as session:
        issue = Issue(week=week, created_at=NOW, fanned_out_at=NOW)
        session.add(issue)
        session.flush()
        segment = Segment(issue_id=issue.id, key="all", comparison_ids="")
        readers = [Subscriber(email=f"g{next(_ids)}@example.com", email_key="") for _ in range(recipients)]
        for reader in readers:
            reader.email_key = reader.email
        session.add_all([segment, *readers])
        session.flush()
        rows = [Delivery(issue_id=issue.id, subscriber_id=r.id, segment_id=segment.id, status=DeliveryStatus.sent,
                         sent_at=NOW) for r in readers]
        session.add_all(rows)
        session.flush()
        return [(row.id, reader.email) for row, reader in zip(rows, readers)]


def report(engine, kind: str, deliveries: list[tuple[int, str]], *, tag: str = "") -> None:
    """The webhook's events of ``kind`` (ours) for ``deliveries``, each with its own provider event id."""
    apply_provider_events(engine=engine, now=NOW, events=[
        ProviderEvent(kind, occurred_at=NOW, provider_event_id=f"{kind}{tag}-{d}", delivery_id=d, email=email)
        for d, email in deliveries])


def check(engine, conf: Settings, transport: RecordingTransport, *, now: datetime = NOW):
    with session_scope(engine) as session:
        ids = list(session.scalars(select(Issue.id)))
    return check_issues(engine=engine, settings=conf, issue_ids=ids, now=now, transport_for=lambda: transport)


def issue_row(engine, week: str = "2026-W48") -> Issue:
    with session_scope(engine) as session:
        return session.scalars(select(Issue).where(Issue.week == week)).one()


def status_counts_of(engine, issue_id: int) -> dict[str, int]:
    with session_scope(engine) as session:
        return dict(session.execute(select(Delivery.status, func.count()).where(Delivery.issue_id == issue_id)
                                    .group_by(Delivery.status)).all())


def outcomes(delivered=0, bounced=0, dropped=0, complaints=0) -> IssueOutcomes:
    return IssueOutcomes(1, "2026-W48", delivered, bounced, dropped, complaints)


def test_the_rule_at_its_edges():
    "499 known: never judged; exactly 5.0 % is within; 5.2 % is past; complaints 0.1 % within, 0.2 % past"
    assert verdict(outcomes(delivered=299, bounced=200), LIMITS) is None
    assert verdict(outcomes(delivered=475, bounced=20, dropped=5), LIMITS) is None
    trip = verdict(outcomes(delivered=474, bounced=20, dropped=6), LIMITS)
    assert trip.reason == "bounce rate 5.2% (26 of 500) > 5.0%" and trip.short == "bounce rate 5.2%"
    assert verdict(outcomes(delivered=1000, complaints=1), LIMITS) is None
    trip = verdict(outcomes(delivered=1000, complaints=2), LIMITS)
    assert trip.reason == "complaint rate 0.20% (2 of 1000) > 0.10%"
    # complaints are judged on what was delivered, once as many as the minimum were
    assert verdict(outcomes(delivered=499, bounced=1, complaints=3), LIMITS) is None
    assert verdict(outcomes(delivered=500, complaints=1), LIMITS).reason == "complaint rate 0.20% (1 of 500) > 0.10%"


def test_rates_read_with_one_decimal_from_1_percent_and_two_below():
    "1 % and up: one decimal; below it, where Gmail's 0.1 % and 0.3 % lines are, two"
    assert [percent(rate) for rate in (0.052, 0.01, 0.009, 0.003, 0.001)] == ["5.2%", "1.0%", "0.90%", "0.30%", "0.10%"]


def test_bounces_past_the_limit_pause_the_issue_with_its_reason_logged_and_one_alert(engine, caplog):
    "500 known, 25 bounced: still sending; a 26th bounce (5.2 %) pauses it, logged, one alert to DIGEST_ALERT_EMAIL"
    deliveries = an_issue(engine, 501)
    transport, conf = RecordingTransport(), settings(str(engine.url))
    report(engine, "processed", deliveries)  # before the outcome: not counted
    report(engine, "delivered", deliveries[25:500])
    report(engine, "bounce", deliveries[:25])
    assert check(engine, conf, transport) == [] and issue_row(engine).paused_at is None
    report(engine, "bounce", deliveries[500:])
    with caplog.at_level(logging.WARNING, logger="digest.guardrail"):
        [paused] = check(engine, conf, transport, now=NOW + timedelta(minutes=1))
    issue = issue_row(engine)
    assert issue.pause_reason == "guardrail: bounce rate 5.2% (26 of 501) > 5.0%"
    assert issue.paused_at == NOW + timedelta(minutes=1) and issue.alerted_at == NOW + timedelta(minutes=1)
    [line] = [r for r in caplog.records if r.name == "digest.guardrail"]
    assert line.levelno == logging.WARNING and "2026-W48" in line.getMessage() and "5.2% (26 of 501)" in line.getMessage()
    [mail] = transport.batches
    assert mail.subject == "Issue 2026-W48 paused: bounce rate 5.2%"
    assert [r.email for r in mail.recipients] == ["ops@example.com"] and mail.recipients[0].delivery_id is None
    assert "digest issue resume 2026-W48" in mail.text and "digest issue cancel 2026-W48" in mail.text
    assert "bounced: 26" in mail.text and "delivered: 475" in mail.text


def test_a_second_trip_neither_realerts_nor_changes_the_reason(engine):
    "more bounces after the pause: the first reason stands and no second email goes out"
    deliveries = an_issue(engine, 600)
    transport, conf = RecordingTransport(), settings(str(engine.url))
    report(engine, "delivered", deliveries[:470])
    report(engine, "dropped", deliveries[470:500])
    assert len(check(engine, conf, transport)) == 1
    reason = issue_row(engine).pause_reason
    report(engine, "bounce", deliveries[500:])
    assert check(engine, conf, transport, now=NOW + timedelta(hours=1)) == []
    assert issue_row(engine).pause_reason == reason == "guardrail: bounce rate 6.0% (30 of 500) > 5.0%"
    assert len(transport.batches) == 1


def test_complaints_past_the_limit_pause_and_within_it_do_not(engine):
    "1,000 delivered: one spam report (0.1 %) is within the limit, a second (0.2 %) pauses the issue"
    deliveries = an_issue(engine, 1000)
    transport, conf = RecordingTransport(), settings(str(engine.url))
    report(engine, "delivered", deliveries)
    report(engine, "complaint", deliveries[:1])
    assert check(engine, conf, transport) == []
    report(engine, "complaint", deliveries[1:2])
    [paused] = check(engine, conf, transport)
    assert issue_row(engine).pause_reason == "guardrail: complaint rate 0.20% (2 of 1000) > 0.10%"
    assert transport.batches[0].subject == "Issue 2026-W48 paused: complaint rate 0.20%"


def test_without_an_alert_address_the_pause_is_only_logged(engine):
    "DIGEST_ALERT_EMAIL unset: the issue pauses with its reason, no email, alerted_at stays empty"
    deliveries = an_issue(engine, 500)
    transport, conf = RecordingTransport(), settings(str(engine.url), alert_email=None)
    report(engine, "bounce", deliveries[:100])
    report(engine, "delivered", deliveries[100:])
    assert len(check(engine, conf, transport)) == 1
    issue = issue_row(engine)
    assert issue.pause_reason.startswith("guardrail: bounce rate 20.0%") and issue.alerted_at is None
    assert transport.batches == []


def test_an_alert_the_provider_refuses_leaves_the_pause_standing_and_is_logged(engine, caplog):
    "the alert's send fails: the issue stays paused with its reason, an ERROR says so, and no retry mails twice"
    deliveries = an_issue(engine, 500)
    transport, conf = RecordingTransport(PermanentError("The from address does not match a verified Sender")), \
        settings(str(engine.url))
    report(engine, "bounce", deliveries[:30])
    report(engine, "delivered", deliveries[30:])
    with caplog.at_level(logging.WARNING, logger="digest.guardrail"):
        [paused] = check(engine, conf, transport)
    assert issue_row(engine).pause_reason == "guardrail: bounce rate 6.0% (30 of 500) > 5.0%"
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "guardrail alert for issue 2026-W48 to ops@example.com not sent" in error.getMessage()
    assert "verified Sender" in error.getMessage() and transport.batches == []


def test_a_resumed_issue_is_judged_afresh_and_a_second_trip_sends_no_second_email(engine):
    """resumed by hand, the figures start again: one more bounce is not judged (under the minimum known);
    past the limit again over 500 new outcomes, paused again, logged, no second mail"""
    deliveries = an_issue(engine, 1_100)
    transport, conf = RecordingTransport(), settings(str(engine.url))
    report(engine, "bounce", deliveries[:50])
    report(engine, "delivered", deliveries[50:500])
    check(engine, conf, transport)
    with session_scope(engine) as session:
        assert resume_issue(session=session, issue_id=issue_row(engine).id, now=NOW)
    assert issue_row(engine).paused_at is None
    report(engine, "bounce", deliveries[500:501])
    check(engine, conf, transport, now=NOW + timedelta(hours=1))
    assert issue_row(engine).paused_at is None, "one outcome since the resume is not enough to judge"
    report(engine, "bounce", deliveries[501:541])
    report(engine, "delivered", deliveries[541:1001])
    [again] = check(engine, conf, transport, now=NOW + timedelta(hours=2))
    issue = issue_row(engine)
    assert issue.paused_at == NOW + timedelta(hours=2) and issue.pause_reason.startswith("guardrail: bounce rate 8.2%")
    assert not again.alert and len(transport.batches) == 1 and issue.alerted_at == NOW


def test_test_sends_replays_and_opens_do_not_move_the_totals(engine):
    "a --test-to send's events name no delivery and count nowhere; a replayed post counts once; processed and opens never"
    deliveries = an_issue(engine, 10)
    report(engine, "processed", deliveries)
    report(engine, "delivered", deliveries)
    report(engine, "delivered", deliveries)  # SendGrid retrying the post: the same event ids
    report(engine, "open", deliveries)
    apply_provider_events(engine=engine, now=NOW, events=[  # a test send to a reader's address: no delivery id
        ProviderEvent("bounce", occurred_at=NOW, provider_event_id=f"t-{d}", email=email) for d, email in deliveries])
    with session_scope(engine) as session:
        [totals] = sending_issues(session=session, issue_ids=[issue_row(engine).id])
    assert (totals.known, totals.delivered, totals.failed, totals.complaints) == (10, 10, 0, 0)


def test_paused_cancelled_and_finished_issues_are_not_judged(engine):
    "only an issue that may still send is judged: the others cost the post one primary-key read"
    for week in ("2026-W45", "2026-W46", "2026-W47"):
        an_issue(engine, 1, week=week)
    with session_scope(engine) as session:
        ids = {issue.week: issue for issue in session.scalars(select(Issue))}
        ids["2026-W45"].paused_at = NOW
        ids["2026-W46"].completed_at = NOW
        session.flush()
        cancel_issue(session=session, issue_id=ids["2026-W47"].id, now=NOW)
        assert sending_issues(session=session, issue_ids=[i.id for i in ids.values()]) == []


def test_a_post_judges_only_the_issues_it_touched(engine):
    "an issue past the limit that this post did not touch is left to its own posts: the check reads only the post's"
    report(engine, "bounce", an_issue(engine, 500, week="2026-W47"))
    report(engine, "delivered", an_issue(engine, 10))
    transport, conf = RecordingTransport(), settings(str(engine.url))

    assert check_issues(engine=engine, settings=conf, issue_ids=[issue_row(engine).id], now=NOW,
                        transport_for=lambda: transport) == []
    assert issue_row(engine, "2026-W47").paused_at is None and transport.batches == []


def test_judging_a_post_that_trips_nothing_never_waits_for_the_write_lock(engine):
    "a sender holds the write lock (SQLite's BEGIN IMMEDIATE) while a post within the limits is judged: the check answers"
    report(engine, "delivered", an_issue(engine, 500))
    issue_id, conf, results = issue_row(engine).id, settings(str(engine.url)), []
    judging = threading.Thread(target=lambda: results.append(check_issues(
        engine=engine, settings=conf, issue_ids=[issue_id], now=NOW, transport_for=RecordingTransport)))

    with session_scope(engine) as session:
        session.get(Issue, issue_id).pause_reason = None  # this transaction holds the write lock
        judging.start()
        judging.join(timeout=10)
        answered = not judging.is_alive()
    judging.join()
    assert answered and results == [[]], "the check waited for the sender's transaction"


def test_two_processes_seeing_the_trip_at_once_pause_and_alert_once(engine):
    "four webhook posts judging the same issue side by side: one pause, one alert"
    deliveries = an_issue(engine, 500)
    transport, conf = RecordingTransport(), settings(str(engine.url))
    report(engine, "bounce", deliveries[:40])
    report(engine, "delivered", deliveries[40:])
    start, results = threading.Barrier(4), []

    def judge():
        start.wait()
        results.append(check(engine, conf, transport))

    threads = [threading.Thread(target=judge) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(len(r) for r in results) == [0, 0, 0, 1]
    assert len(transport.batches) == 1


def test_a_signed_webhook_post_past_the_limit_pauses_the_issue_and_mails_the_alert(db_url, engine, tmp_path):
    "through POST /webhooks/sendgrid: 500 events, 40 bounces: 200, the issue paused, the alert in the outbox"
    deliveries = an_issue(engine, 500)
    conf = web_settings(db_url, sendgrid_webhook_public_key=PUBLIC_KEY, alert_email="ops@example.com",
                        outbox_dir=tmp_path / "outbox")
    items = [{"email": email, "timestamp": int(NOW.timestamp()), "event": "bounce" if n < 40 else "delivered",
              "type": "bounce", "sg_event_id": f"w-{d}", "delivery_id": str(d)}
             for n, (d, email) in enumerate(deliveries)]
    with TestClient(create_app(conf, engine=engine, transport=RecordingTransport())) as client:
        response = post(client, items)
    assert response.status_code == 200 and response.json()["applied"] == 500
    assert issue_row(engine).pause_reason == "guardrail: bounce rate 8.0% (40 of 500) > 5.0%"
    [alert] = list((tmp_path / "outbox").glob("*.eml"))
    text = alert.read_text()
    assert "To: ops@example.com" in text and "Subject: Issue 2026-W48 paused: bounce rate 8.0%" in text


@pytest.mark.postgres
def test_two_workers_stop_within_one_batch_when_the_webhook_trips_the_guardrail(postgres_url, tmp_path):
    "4,000 readers in batches of 50 on two workers: 40 bounces among the first 600 sent pause the issue, each worker stops after its batch in flight, nothing twice; resumed, one worker sends the rest once"
    issue_id = opened(postgres_url, 4000)
    engine = make_engine(postgres_url)
    conf = web_settings(postgres_url, sendgrid_webhook_public_key=PUBLIC_KEY, alert_email="ops@example.com",
                        outbox_dir=tmp_path / "outbox")
    with FakeSendGrid(latency=0.2) as server, TestClient(create_app(conf, engine=engine)) as hook:
        env = env_for(postgres_url, server, DIGEST_BATCH_SIZE="50", DIGEST_WORKER_IDLE_SECONDS="0.2")
        workers = [start_worker(env, tmp_path, f"w{n}", "--once") for n in range(2)]
        wait_for(lambda: len(server.accepted) >= 12, 60, "600 recipients accepted")
        sent = [(p["custom_args"]["delivery_id"], p["to"][0]["email"])
                for body in list(server.accepted) for p in body["personalizations"]][:600]
        items = [{"email": email, "timestamp": int(time.time()), "event": "bounce" if n < 40 else "delivered",
                  "type": "bounce", "sg_event_id": f"e2e-{d}", "delivery_id": d} for n, (d, email) in enumerate(sent)]
        assert post(hook, items).status_code == 200
        accepted_at_pause = len(server.accepted)  # the pause is committed once the post is answered
        assert [w.wait(timeout=60) for w in workers] == [0, 0]
        after_pause = sum(len(body["personalizations"]) for body in server.accepted[accepted_at_pause:])
        copies = accepted_addresses(server)
        paused, statuses = issue_row(engine, "2026-W01"), status_counts_of(engine, issue_id)
        with session_scope(engine) as session:
            assert resume_issue(session=session, issue_id=issue_id, now=datetime.now(timezone.utc))
        assert start_worker(env, tmp_path, "heir", "--once").wait(timeout=120) == 0
        everything = accepted_addresses(server)
    issue = issue_row(engine, "2026-W01")
    engine.dispose()
    assert issue.pause_reason is None and issue.completed_at is not None
    assert paused.pause_reason == "guardrail: bounce rate 6.7% (40 of 600) > 5.0%"
    assert statuses == {"sent": len(copies), "pending": 4000 - len(copies)}, "the rest wait, none left leased"
    assert after_pause <= 2 * 50, f"{after_pause} recipients went out after the pause: more than a batch per worker"
    assert set(copies.values()) == {1} and len(copies) < 4000, "stopped part way, nothing sent twice"
    assert set(everything.values()) == {1} and len(everything) == 4000, "resumed, each reader got it once"
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    held = [summary(tmp_path, f"w{n}")["sent"] for n in range(2)]
    assert sum(held) == len(copies) and summary(tmp_path, "heir")["sent"] == 4000 - len(copies)


def handed_over(engine, deliveries: list[tuple[int, str]], batch_id: str) -> None:
    """DIGEST_DELIVERY=local: the issue's sends held by the provider under ``batch_id`` for their readers' hour."""
    with session_scope(engine) as session:
        provider_batch_id(session=session, issue_id=issue_row(engine).id, new=batch_id)
        for delivery_id, _ in deliveries:
            session.get(Delivery, delivery_id).due_at = NOW + timedelta(hours=5)


def test_a_trip_pauses_what_sendgrid_holds_for_the_readers_hour_and_the_alert_goes_through_sendgrid(
        engine, fake_sendgrid, sendgrid_transport, caplog):
    "DIGEST_DELIVERY=local: SendGrid's batch of the issue is paused with it, both logged; the alert is tagged"
    deliveries = an_issue(engine, 500)
    handed_over(engine, deliveries[:120], batch_id := sendgrid_transport.new_batch_id())
    report(engine, "bounce", deliveries[:30])
    report(engine, "delivered", deliveries[30:])

    with caplog.at_level(logging.WARNING, logger="digest.guardrail"):
        [paused] = check(engine, settings(str(engine.url)), sendgrid_transport)

    assert fake_sendgrid.stopped[batch_id][0] == "pause" and issue_row(engine).provider_hold == "pause"
    assert [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "digest.guardrail"] == [
        (logging.WARNING, "issue 2026-W48 paused by the guardrail: bounce rate 6.0% (30 of 500) > 5.0%; no more "
                          "batches go out until `digest issue resume 2026-W48` (or `digest issue cancel 2026-W48`)"),
        (logging.WARNING, "issue 2026-W48: sendgrid holds back the 120 deliveries it had for their readers' hour until "
                          "the issue is resumed; what was due within 10 minutes may still go out")]
    [alert] = fake_sendgrid.accepted
    assert alert["categories"] == ["guardrail-alert"] and "custom_args" not in alert
    assert [p["to"] for p in alert["personalizations"]] == [[{"email": "ops@example.com"}]]
    assert alert["subject"] == "Issue 2026-W48 paused: bounce rate 6.0%"


def test_a_transport_that_cannot_start_leaves_the_pause_standing_and_says_what_to_do(engine, caplog):
    "the transport refuses to start: paused all the same; an ERROR naming the command that asks again, one for the alert"
    deliveries = an_issue(engine, 500)
    handed_over(engine, deliveries[:10], "batch-1")
    report(engine, "bounce", deliveries[:30])
    report(engine, "delivered", deliveries[30:])

    def refusing():
        raise ValueError("SendGridTransport: api_key is empty")

    with caplog.at_level(logging.WARNING, logger="digest.guardrail"):
        [paused] = check_issues(engine=engine, settings=settings(str(engine.url)), issue_ids=[issue_row(engine).id],
                                now=NOW, transport_for=refusing)

    assert issue_row(engine).pause_reason == "guardrail: bounce rate 6.0% (30 of 500) > 5.0%" and paused.alert
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == [
        "issue 2026-W48: what the provider holds for its readers' hour was not paused (ValueError: SendGridTransport: "
        "api_key is empty); run `digest issue pause 2026-W48` to ask again",
        "guardrail alert for issue 2026-W48 to ops@example.com not sent (ValueError: SendGridTransport: api_key is "
        "empty); the pause stands"]


def test_an_issue_paused_by_hand_while_a_post_judges_it_does_not_keep_the_post_from_pausing_the_next(engine):
    """two issues past the limit; the operator pauses the first while the post reads the totals: the post's pause of
    it finds it paused, and the post pauses the second all the same, with its own alert"""
    report(engine, "bounce", an_issue(engine, 40, week="2026-W47"))
    deliveries = an_issue(engine, 500)
    report(engine, "bounce", deliveries[:40])
    report(engine, "delivered", deliveries[40:])
    ids = [issue_row(engine, week).id for week in ("2026-W47", "2026-W48")]
    transport, conf, results = RecordingTransport(), settings(str(engine.url), guardrail_min_events=40), []
    judging = threading.Thread(target=lambda: results.append(check_issues(
        engine=engine, settings=conf, issue_ids=ids, now=NOW, transport_for=lambda: transport)))

    with session_scope(engine) as session:
        assert pause_issue(session=session, issue_id=ids[0], reason="by hand", now=NOW)
        session.flush()
        judging.start()
        time.sleep(0.5)  # the post reads both issues as sending, then waits for this transaction to pause them
    judging.join()

    [[paused]] = results
    assert paused.outcomes.week == "2026-W48" and paused.alert
    assert [issue_row(engine, week).pause_reason for week in ("2026-W47", "2026-W48")] == \
        ["by hand", "guardrail: bounce rate 8.0% (40 of 500) > 5.0%"]
    assert [batch.subject for batch in transport.batches] == ["Issue 2026-W48 paused: bounce rate 8.0%"]
