"""Warm-up of a new sending domain (issue 18, item 5): sends per day follow the ramp, shared by every sender,
most engaged readers first; an issue larger than a day's allowance goes out over days, exactly once."""

from datetime import date, datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from digest.claim.opening import open_issue
from digest.config import Settings
from digest.send.warmup import RAMP, allowance
from storage.db import session_scope
from storage.models import Delivery, DeliveryStatus, Event
from tests.factories import RecordingTransport, add_comparison, add_subscribers, build_sender

UTC = timezone.utc
START = date(2026, 11, 26)
DAY1 = datetime(2026, 11, 26, 9, tzinfo=UTC)


def test_the_ramp_grows_then_ends():
    """day 1 is the first step, a day before the start too; after the last step there is no limit"""
    assert allowance(start=None, today=START) is None
    assert allowance(start=START, today=START - timedelta(days=3)) == RAMP[0] == 1_000
    assert allowance(start=START, today=START + timedelta(days=1)) == RAMP[1]
    assert allowance(start=START, today=START + timedelta(days=len(RAMP) - 1)) == RAMP[-1]
    assert allowance(start=START, today=START + timedelta(days=len(RAMP))) is None
    assert all(later > earlier for earlier, later in zip(RAMP, RAMP[1:]))


def make_sender(db_url, tmp_path, clock, transport):
    settings = Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                        transport="outbox", outbox_dir=tmp_path / "outbox", timezone="UTC", warmup_start=START,
                        batch_size=300)
    return build_sender(settings, transport=transport, sleep=lambda s: None, clock=clock)


def sent(engine) -> int:
    with session_scope(engine) as session:
        return session.execute(select(func.count()).select_from(Delivery)
                               .where(Delivery.status == DeliveryStatus.sent.value)).scalar_one()


def test_an_issue_larger_than_the_days_allowance_goes_out_over_days_exactly_once(db_url, tmp_path):
    """2,600 readers: 1,000 on day 1 (300+300+300+100), nothing more that day, by any sender; 1,600 on day 2"""
    transport, today = RecordingTransport(), [DAY1]
    first = make_sender(db_url, tmp_path, lambda: today[0], transport)
    second = make_sender(db_url, tmp_path, lambda: today[0], transport)
    engine = first.services.engine
    add_comparison(engine, published_at=DAY1 - timedelta(days=1))
    add_subscribers(engine, 2_600)
    issue = open_issue(engine=engine, week="2026-W48", now=DAY1).issue

    report = first.send_issue(issue)
    assert (report.sent, sent(engine)) == (1_000, 1_000)
    assert [len(batch.recipients) for batch in transport.batches] == [300, 300, 300, 100]
    assert report.halted.startswith("warm-up: today's 1,000 sends are used")
    assert second.send_issue(issue).sent == 0, "another sender shares the day's allowance"

    today[0] = DAY1 + timedelta(days=1)
    assert second.send_issue(issue).sent + first.send_issue(issue).sent == 1_600
    recipients = transport.recipients
    assert len(recipients) == len(set(recipients)) == 2_600
    for sender in (first, second):
        sender.services.engine.dispose()


def test_readers_who_open_and_click_are_queued_first(engine):
    """with engaged_first, readers with human opens and clicks get the lowest delivery ids; machine opens do not count"""
    add_comparison(engine, published_at=DAY1 - timedelta(days=1))
    quiet, machine, reader, fan = add_subscribers(engine, 4)
    with session_scope(engine) as session:
        session.add_all([Event(kind="open", source="pixel", subscriber_id=machine, machine=True, occurred_at=DAY1)] * 1)
        session.add_all([Event(kind="open", source="pixel", subscriber_id=reader, occurred_at=DAY1),
                         Event(kind="click", source="click", subscriber_id=fan, occurred_at=DAY1),
                         Event(kind="open", source="pixel", subscriber_id=fan, occurred_at=DAY1)])
    open_issue(engine=engine, week="2026-W48", now=DAY1, engaged_first=True)
    with session_scope(engine) as session:
        order = session.execute(select(Delivery.subscriber_id).order_by(Delivery.id)).scalars().all()
    assert order == [fan, reader, quiet, machine]


@pytest.mark.parametrize("warmup", [False, True])
def test_without_a_warm_up_nothing_is_held_back(db_url, tmp_path, warmup):
    """no DIGEST_WARMUP_START, or a warm-up long over: the whole issue goes out at once"""
    transport = RecordingTransport()
    settings = Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                        transport="outbox", outbox_dir=tmp_path / "outbox", timezone="UTC",
                        warmup_start=START - timedelta(days=365) if warmup else None)
    sender = build_sender(settings, transport=transport, sleep=lambda s: None, clock=lambda: DAY1)
    add_comparison(sender.services.engine, published_at=DAY1 - timedelta(days=1))
    add_subscribers(sender.services.engine, 1_500)
    issue = open_issue(engine=sender.services.engine, week="2026-W48", now=DAY1).issue
    report = sender.send_issue(issue)
    assert (report.sent, report.halted) == (1_500, None)
    sender.services.engine.dispose()


def test_digest_send_says_the_days_allowance_is_used_and_exits_0(db_url, tmp_path):
    """`digest send` on a warm-up's first day: 1,000 sent, one line saying the rest goes from tomorrow, exit 0
    (nothing failed: the issue is not paused, the scheduler's catch-up sends the rest)"""
    import os
    import subprocess
    import sys

    from storage.migrate import upgrade

    upgrade(db_url)
    from storage.db import make_engine
    engine = make_engine(db_url)
    add_comparison(engine, published_at=datetime.now(UTC) - timedelta(days=1))
    add_subscribers(engine, 1_200)
    engine.dispose()
    env = {**os.environ, "DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k" * 32, "DIGEST_TRANSPORT": "outbox",
           "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"), "DIGEST_BASE_URL": "https://news.example.com",
           "DIGEST_WARMUP_START": datetime.now(UTC).date().isoformat(), "DIGEST_TIMEZONE": "UTC"}
    result = subprocess.run([sys.executable, "-m", "digest.cli", "send"], env=env, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "this run sent 1000 in 1 batches" in result.stdout
    assert "warm-up: today's 1,000 sends are used; the rest goes out from tomorrow" in result.stdout


def test_a_claim_that_finds_nothing_gives_back_all_it_reserved(db_url, tmp_path):
    "300 readers on day 1: the day counts 300 sends, however many claims found nothing left after them"
    from storage.models import SendDay

    transport = RecordingTransport()
    sender = make_sender(db_url, tmp_path, lambda: DAY1, transport)
    engine = sender.services.engine
    add_comparison(engine, published_at=DAY1 - timedelta(days=1))
    add_subscribers(engine, 300)
    issue = open_issue(engine=engine, week="2026-W48", now=DAY1).issue
    assert sender.send_issue(issue).sent == 300
    assert sender.send_issue(issue).sent == 0  # a second run: reserves a batch, finds nothing, gives it back
    with session_scope(engine) as session:
        assert session.execute(select(SendDay.used)).scalars().all() == [300]
    engine.dispose()
