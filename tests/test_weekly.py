"""Claim, catch-up, fan-out and send, on real SQLite and real PostgreSQL, with a recording transport."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select

from tests.factories import build_sender
from digest.config import Settings
from digest.claim.opening import open_issue
from digest.claim.weeks import slot
from digest.weekly import run
from storage.deliveries import _PENDING, _candidates_sql
from storage.raw import paramstyle
from storage.db import session_scope
from storage.models import Delivery, DeliveryStatus, Issue, IssueComparison, Subscriber, SubscriberStatus
from tests.factories import RecordingTransport, add_comparison, add_subscribers

UTC = timezone.utc
# Week 2026-W48 runs Mon 23 to Sun 29 November; the default slot is Thursday 09:00 UTC.
MON = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
SLOT = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def settings(db_url, tmp_path):
    return Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                    outbox_dir=tmp_path / "outbox", transport="outbox", timezone="UTC")


@pytest.fixture
def transport():
    return RecordingTransport()


@pytest.fixture
def sender(settings, transport):
    sender = build_sender(settings, transport=transport, sleep=lambda s: None)
    yield sender
    sender.services.engine.dispose()


def count(engine, model, *where):
    with session_scope(engine) as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def test_an_issue_claims_every_published_unclaimed_comparison_once(sender):
    "issue W48 takes what was published by now; W49 takes only what came after"
    early = add_comparison(sender.services.engine, published_at=MON - timedelta(days=3))
    late = add_comparison(sender.services.engine, published_at=SLOT + timedelta(hours=1))
    add_subscribers(sender.services.engine, 3)
    first = open_issue(engine=sender.services.engine, week="2026-W48", now=SLOT)
    assert first.created and first.claimed == 1 and first.deliveries == 3
    again = open_issue(engine=sender.services.engine, week="2026-W48", now=SLOT + timedelta(days=1))
    assert not again.created and again.issue.id == first.issue.id
    second = open_issue(engine=sender.services.engine, week="2026-W49", now=SLOT + timedelta(days=7))
    assert second.claimed == 1
    with session_scope(sender.services.engine) as session:
        owner = dict(session.execute(select(IssueComparison.comparison_id, IssueComparison.issue_id)).all())
    assert owner == {early: first.issue.id, late: second.issue.id}


def test_a_send_shows_the_comparisons_as_the_issue_opened_with_them_and_why_each_reader_gets_it(sender, transport):
    "a verdict flipped by an import after the issue opened is next week's news: this issue's email shows the panel "
    "it was opened with, and the audience line of its reader's segment"
    from digest.importing.comparisons import store_comparison
    from tests.test_verdict_changes import W47, item

    engine = sender.services.engine
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss"), ("Quill", "ssss")), now=W47)
    add_subscribers(engine, 1, categories=("Developer Tools",))
    opened = open_issue(engine=engine, week="2026-W47", now=W47)
    flipped = item("c", ("Cellmind", "kksk"), ("Quill", "ssss"))
    store_comparison(engine=engine, item=flipped, now=W47 + timedelta(minutes=5))

    sender.send_issue(opened.issue)
    batch, = transport.batches
    assert "Panel: 4 ship / 0 skip" in batch.text and "1 ship / 3 skip" not in batch.text
    assert "You get this because you subscribed to Weekly AI Tool Verdicts for:\n  Developer Tools\n" in batch.text


def test_no_comparison_means_no_issue_and_no_email(sender, transport):
    "nothing published since the last issue: no issue row, no delivery, no request, and it is not an error"
    add_subscribers(sender.services.engine, 2)
    result = run(services=sender.services, sender=sender, now=SLOT, week="2026-W48")
    assert result.opened.issue is None and "no new comparison" in result.reason
    assert count(sender.services.engine, Issue) == 0 and transport.calls == 0


def test_a_backlog_after_downtime_rolls_into_the_next_issue(sender, transport):
    "three weeks without a run: everything published since goes into one issue, each comparison once"
    ids = [add_comparison(sender.services.engine, published_at=MON - timedelta(days=d)) for d in (20, 13, 6, 1)]
    add_subscribers(sender.services.engine, 2)
    result = run(services=sender.services, sender=sender, now=SLOT + timedelta(hours=2))
    assert result.opened.created and result.opened.claimed == len(ids)
    assert len(transport.batches) == 1 and len(transport.recipients) == 2


def test_the_scheduler_waits_for_the_slot_and_something_published_by_then(sender, transport):
    "before Thursday 09:00 nothing opens; after it the issue opens once, later ticks only resume"
    add_comparison(sender.services.engine, published_at=MON)
    add_subscribers(sender.services.engine, 1)
    assert slot("2026-W48", schedule=sender.services.settings.send_schedule, tz=sender.services.settings.tz) == SLOT
    early = run(services=sender.services, sender=sender, now=SLOT - timedelta(minutes=1))
    assert early.opened is None and "not due" in early.reason and transport.calls == 0
    due = run(services=sender.services, sender=sender, now=SLOT + timedelta(minutes=1))
    assert due.opened.created and len(transport.recipients) == 1
    later = run(services=sender.services, sender=sender, now=SLOT + timedelta(hours=1))
    assert later.opened is None and "already exists" in later.reason and len(transport.recipients) == 1


def test_an_issue_sent_by_hand_before_its_slot_is_named_by_the_scheduler_not_called_not_due(sender, transport):
    "an editor sends this week's issue on Monday: Tuesday's tick says the issue exists and sends nothing more"
    add_comparison(sender.services.engine, published_at=MON)
    add_subscribers(sender.services.engine, 1)
    by_hand = run(services=sender.services, sender=sender, now=MON + timedelta(hours=10), week="2026-W48")
    assert by_hand.opened.created and len(transport.recipients) == 1
    tick = run(services=sender.services, sender=sender, now=MON + timedelta(days=1))
    assert tick.opened is None and tick.reason == "issue 2026-W48 already exists" and len(transport.recipients) == 1


def test_a_comparison_published_after_the_slot_waits_for_next_week(sender, transport):
    "the hourly tick does not open a mid-week issue for a verdict published after the slot"
    add_comparison(sender.services.engine, published_at=SLOT + timedelta(hours=3))
    add_subscribers(sender.services.engine, 1)
    result = run(services=sender.services, sender=sender, now=SLOT + timedelta(hours=4))
    assert result.opened is None and "rolls into the next issue" in result.reason
    assert count(sender.services.engine, Issue) == 0


def test_subscribers_get_only_their_categories_and_nothing_when_none_match(sender, transport):
    "Writing followers get the Writing verdict only; a Security-only follower and the unsubscribed get nothing"
    add_comparison(sender.services.engine, category="Writing", published_at=MON, pcts=(100, 0), title="Quill vs Inkwell")
    add_comparison(sender.services.engine, category="Developer Tools", published_at=MON, title="Forge vs Anvil")
    everything = add_subscribers(sender.services.engine, 2)
    writers = add_subscribers(sender.services.engine, 3, categories=["Writing"])
    add_subscribers(sender.services.engine, 4, categories=["Security"])
    add_subscribers(sender.services.engine, 5, status=SubscriberStatus.unsubscribed)
    add_subscribers(sender.services.engine, 1, status=SubscriberStatus.bounced)
    run(services=sender.services, sender=sender, now=SLOT, week="2026-W48")
    assert len(transport.recipients) == len(everything) + len(writers)
    by_subject = {batch.subject: len(batch.recipients) for batch in transport.batches}
    assert sorted(by_subject.values()) == [2, 3], "two segments, rendered once each"
    writing_batch = next(b for b in transport.batches if len(b.recipients) == 3)
    assert "Quill vs Inkwell" in writing_batch.text and "Forge vs Anvil" not in writing_batch.text
    everyone_batch = next(b for b in transport.batches if len(b.recipients) == 2)
    assert "Quill vs Inkwell" in everyone_batch.text and "Forge vs Anvil" in everyone_batch.text


def test_every_subscriber_gets_exactly_one_email_across_batches_and_reruns(sender, transport, settings):
    "2,500 subscribers in batches of 1000: three requests, each address once, a rerun sends nothing"
    add_comparison(sender.services.engine, published_at=MON)
    add_subscribers(sender.services.engine, 2500)
    first = run(services=sender.services, sender=sender, now=SLOT, week="2026-W48")
    assert [len(b.recipients) for b in transport.batches] == [1000, 1000, 500]
    assert len(set(transport.recipients)) == 2500
    assert (first.reports[0].sent, first.reports[0].recipients, first.reports[0].segments) == (2500, 2500, 1)
    run(services=sender.services, sender=sender, now=SLOT + timedelta(hours=1), week="2026-W48")
    assert len(transport.recipients) == 2500
    assert count(sender.services.engine, Delivery, Delivery.status == DeliveryStatus.sent.value) == 2500
    with session_scope(sender.services.engine) as session:
        assert session.get(Issue, first.opened.issue.id).completed_at is not None


def test_each_recipient_carries_its_own_signed_token_and_unsubscribe_headers(sender, transport):
    "substitutions and List-Unsubscribe name the recipient's own delivery; custom args map events back"
    add_comparison(sender.services.engine, published_at=MON)
    # Readers who left before: the deliveries' ids (1, 2) are not their readers' (4, 5).
    add_subscribers(sender.services.engine, 3, status=SubscriberStatus.unsubscribed, prefix="gone")
    add_subscribers(sender.services.engine, 2)
    run(services=sender.services, sender=sender, now=SLOT, week="2026-W48")
    batch = transport.batches[0]
    assert batch.headers["List-Id"] and batch.categories == ["weekly-digest", "2026-W48"]
    with session_scope(sender.services.engine) as session:
        deliveries = {d.id: d.subscriber_id for d in session.execute(select(Delivery)).scalars()}
        [segment] = session.execute(select(Delivery.segment_id).distinct()).scalars().all()
    assert batch.custom_args == {"issue": "2026-W48", "segment": str(segment)}  # on every event SendGrid posts
    for person in batch.recipients:
        ref = sender.services.signer.read_recipient_token(person.substitutions["[%t%]"])
        assert ref.delivery_id == person.delivery_id and deliveries[ref.delivery_id] == ref.subscriber_id
        assert person.headers["List-Unsubscribe"] == f"<https://news.example.com/u/{person.substitutions['[%t%]']}>"
        assert person.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "[%t%]" in batch.html and "[%t%]" in batch.text


def test_someone_who_unsubscribes_after_fan_out_is_not_sent_to(sender, transport):
    "an unsubscribe between opening the issue and sending it cancels that delivery"
    add_comparison(sender.services.engine, published_at=MON)
    ids = add_subscribers(sender.services.engine, 3)
    opened = open_issue(engine=sender.services.engine, week="2026-W48", now=SLOT)
    with session_scope(sender.services.engine) as session:
        session.get(Subscriber, ids[0]).status = SubscriberStatus.unsubscribed
    report = sender.send_issue(opened.issue)
    assert report.sent == 2 and report.cancelled == 1 and len(transport.recipients) == 2


def test_a_delivery_left_by_an_erase_racing_the_fan_out_is_deleted_not_sent(sender, transport):
    "erased while the issue opened: the fan-out's row for them is deleted by the claim, and the issue completes"
    add_comparison(sender.services.engine, published_at=MON)
    ids = add_subscribers(sender.services.engine, 3)
    opened = open_issue(engine=sender.services.engine, week="2026-W48", now=SLOT)
    with session_scope(sender.services.engine) as session:  # what the race leaves: the subscriber gone, the row kept
        session.execute(delete(Subscriber).where(Subscriber.id == ids[1]))
    report = sender.send_issue(opened.issue)
    assert report.sent == 2 and report.remaining == 0
    sent = sorted(r.delivery_id for batch in transport.batches for r in batch.recipients)
    assert sent == sorted(delivery_owners(sender.services.engine)) and len(sent) == 2
    assert ids[1] not in delivery_owners(sender.services.engine).values()
    assert count(sender.services.engine, Issue, Issue.completed_at.is_not(None)) == 1


def delivery_owners(engine) -> dict[int, int]:
    with session_scope(engine) as session:
        return dict(session.execute(select(Delivery.id, Delivery.subscriber_id)).all())


def test_claimed_comparisons_are_flagged_and_the_rest_stay_pickable(db_url, engine):
    "opening an issue flags what it claimed (the pick's index); a comparison published later is still picked"
    from storage.comparisons import claimable_comparisons
    from storage.models import Comparison

    first = add_comparison(engine, published_at=SLOT - timedelta(days=2))
    later = add_comparison(engine, published_at=SLOT + timedelta(days=1))
    add_subscribers(engine, 3)
    open_issue(engine=engine, week="2026-W48", now=SLOT)
    with session_scope(engine) as session:
        flags = {c.id: c.claimed for c in session.execute(select(Comparison)).scalars()}
        picked = [f.id for f in claimable_comparisons(session=session, now=SLOT + timedelta(days=2))]
    assert flags == {first: True, later: False}
    assert picked == [later]


@pytest.mark.postgres
def test_after_a_fan_out_the_claim_walks_the_index_instead_of_sorting_the_issue(postgres_url):
    "PostgreSQL plans the sender's claim on fresh statistics: in index order, stopping at the batch size"
    sender = build_sender(Settings(database_url=postgres_url, secret_key="k" * 32, transport="outbox"))
    add_comparison(sender.services.engine, published_at=MON)
    add_subscribers(sender.services.engine, 5000)
    opened = open_issue(engine=sender.services.engine, week="2026-W48", now=SLOT)
    claim = paramstyle(_candidates_sql("postgresql", _PENDING), "postgresql")
    raw = sender.services.engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN " + claim, {"issue_id": opened.issue.id, "limit": 1000, "horizon": SLOT + timedelta(hours=72),
                                          "now": SLOT})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    finally:
        raw.close()
        sender.services.engine.dispose()
    assert opened.deliveries == 5000
    assert "ix_delivery_claim" in plan and "Sort" not in plan and "Bitmap" not in plan, plan
