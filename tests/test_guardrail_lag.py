"""Issue 21, item 3: the guardrail judges by when events happened, not when the Event Webhook brings them — on
SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from digest.track.events import ProviderEvent, apply_provider_events
from storage.db import session_scope
from storage.issue_state import resume_issue
from tests.factories import RecordingTransport
from tests.test_guardrail import NOW, an_issue, check, issue_row, settings


def report_at(engine, kind: str, deliveries: list[tuple[int, str]], *, at, arrived) -> None:
    """Events of ``kind`` that happened ``at`` and reach the webhook ``arrived``."""
    apply_provider_events(engine=engine, now=arrived, events=[
        ProviderEvent(kind, occurred_at=at, provider_event_id=f"{kind}-{at:%H%M}-{d}", delivery_id=d, email=email)
        for d, email in deliveries])


def totals(engine) -> tuple[int, int]:
    issue = issue_row(engine)
    return issue.reported_delivered, issue.reported_bounced


def test_events_from_before_a_resume_that_arrive_after_it_do_not_pause_the_issue_again(engine):
    "paused at 10 % bounces, resumed at 20:00; 100 more bounces from 19:50 arrive at 20:10 (the webhook ran behind): not counted, not paused; new ones are"
    deliveries = an_issue(engine, 1_300)
    transport, conf = RecordingTransport(), settings(str(engine.url))
    report_at(engine, "bounce", deliveries[:60], at=NOW, arrived=NOW)
    report_at(engine, "delivered", deliveries[60:600], at=NOW, arrived=NOW)
    assert check(engine, conf, transport), "paused: 60 of 600 bounced"
    resumed_at = NOW + timedelta(hours=1)
    with session_scope(engine) as session:
        assert resume_issue(session=session, issue_id=issue_row(engine).id, now=resumed_at)

    late = resumed_at + timedelta(minutes=10)
    report_at(engine, "bounce", deliveries[600:700], at=resumed_at - timedelta(minutes=10), arrived=late)
    report_at(engine, "delivered", deliveries[700:1200], at=resumed_at + timedelta(minutes=5), arrived=late)
    assert check(engine, conf, transport, now=late) == []
    assert totals(engine) == (500, 0), "the late bounces happened before the resume: recorded, not judged"
    assert issue_row(engine).paused_at is None

    report_at(engine, "bounce", deliveries[1200:1300], at=late, arrived=late)
    [paused] = check(engine, conf, transport, now=late)
    assert (paused.outcomes.bounced, paused.outcomes.known) == (100, 600)
