"""The monthly email (issue 19), on real SQLite and real PostgreSQL: a month of the scheduler's weekly runs, with a
weekly reader, monthly readers, a reader who turns monthly mid-month and one who follows a single category."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from digest.claim.monthly import (
    due_month,
    month_covered,
    month_slot,
    next_month_slot,
    open_monthly,
    plan_month,
)
from digest.claim.selection import ComparisonFacts
from digest.config import Settings
from digest.editor.dry_run import dry_run
from digest.importing.comparisons import store_comparison
from digest.weekly import run
from storage.db import session_scope
from storage.models import Delivery, Issue, IssueKind, Subscriber
from storage.reader_results import previous_issue
from tests.factories import (
    RecordingTransport,
    add_comparison,
    add_subscribers,
    build_sender,
)

UTC = timezone.utc
SCHEDULE = "0 9 * * thu"  # the default: Thursdays 09:00
# The weekly slots of 2026-W46 … 2026-W50; 3 December is the first Thursday of December: the monthly email's day.
SLOTS = [datetime(2026, 11, 12, 9, 0, tzinfo=UTC) + timedelta(weeks=n) for n in range(5)]
DECEMBER = SLOTS[3]
MONTHLY_SUBJECT = "Your month of verdicts: November 2026"


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


def readers(engine, prefix: str, *, categories=(), monthly: bool = True) -> int:
    (reader,) = add_subscribers(engine, 1, categories=categories, prefix=prefix)
    if monthly:
        turn_monthly(engine, reader)
    return reader


def turn_monthly(engine, subscriber_id: int) -> None:
    with session_scope(engine) as session:
        session.get(Subscriber, subscriber_id).cadence = "monthly"


def publish_week(engine, slot: datetime, week: int) -> list[tuple[str, int]]:
    """Three verdicts two days before ``slot``, Developer Tools and Writing in turn: (title, weaker tool's ship %).

    The weaker tool's ship % is a permutation across the weeks, so the month's ranking (most decisive first)
    interleaves the weeks."""
    published = []
    for n in range(3):
        spread = (week * 7 + n * 11) % 19 * 5  # 0 … 90, distinct across the first weeks
        title = f"Week {week} verdict {n}"
        add_comparison(engine, published_at=slot - timedelta(days=2), title=title, pcts=(100, spread),
                       category="Writing" if (week + n) % 2 else "Developer Tools")
        published.append((title, spread))
    return published


def emails_to(transport: RecordingTransport, prefix: str) -> list[tuple[str, str]]:
    """(subject, text) of each email ``prefix``'s reader got."""
    return [(batch.subject, batch.text) for batch in transport.batches
            for recipient in batch.recipients if recipient.email.startswith(prefix)]


def titles_in(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("Week ") and " verdict " in line]


def count(engine, model, *where) -> int:
    with session_scope(engine) as session:
        return session.execute(select(func.count()).select_from(model).where(*where)).scalar_one()


def test_a_month_of_weekly_runs_for_a_monthly_reader(sender, transport, settings):
    "five weeks of the scheduler: weekly readers get each issue, monthly ones nothing until 3 December, then one email each, ranked and capped"
    engine = sender.services.engine
    readers(engine, "weekly", monthly=False)
    readers(engine, "monthly")
    switcher = readers(engine, "switcher", monthly=False)
    readers(engine, "writer", categories=["Writing"])
    published: dict[str, list[tuple[str, int]]] = {}
    for week, slot in enumerate(SLOTS[:3], 46):
        published[f"2026-W{week}"] = publish_week(engine, slot, week)
        assert run(services=sender.services, sender=sender, now=slot + timedelta(minutes=1)).opened.created
        assert run(services=sender.services, sender=sender, now=slot + timedelta(hours=1)).opened is None
        if week == 47:
            turn_monthly(engine, switcher)  # after two weekly issues: the rest of the month in the monthly email
    assert len(emails_to(transport, "weekly")) == 3 and len(emails_to(transport, "switcher")) == 2
    assert emails_to(transport, "monthly") == [] and emails_to(transport, "writer") == []

    published["2026-W49"] = publish_week(engine, DECEMBER, 49)
    on_the_day = run(services=sender.services, sender=sender, now=DECEMBER + timedelta(minutes=1))
    assert on_the_day.opened.created, "the week's issue opens first"
    assert on_the_day.monthly.created and on_the_day.monthly.covers == ["2026-W46", "2026-W47", "2026-W48", "2026-W49"]
    assert on_the_day.monthly.deliveries == 3 and on_the_day.monthly.segments == 3

    everything = sorted((spread, title) for week in published.values() for title, spread in week)
    ((subject, text),) = emails_to(transport, "monthly")
    assert subject.startswith(MONTHLY_SUBJECT + " — " + everything[0][1])
    assert titles_in(text) == [title for _, title in everything[:8]], "the 8 most decisive of the month, in rank order"
    assert "And 4 more verdicts this month:" in text

    ((subject, text),) = emails_to(transport, "switcher")[2:]
    got = {title for week in ("2026-W46", "2026-W47") for title, _ in published[week]}
    assert subject.startswith(MONTHLY_SUBJECT) and titles_in(text)
    assert not got & set(titles_in(text)), "never a comparison twice"
    assert set(titles_in(text)) == {title for week in ("2026-W48", "2026-W49") for title, _ in published[week]}

    ((subject, text),) = emails_to(transport, "writer")
    writing = {title for week, comparisons in published.items() for n, (title, _) in enumerate(comparisons)
               if (int(week[-2:]) + n) % 2}
    assert set(titles_in(text)) == writing and "DEVELOPER TOOLS" not in text

    weekly = [subject for subject, _ in emails_to(transport, "weekly")]
    assert len(weekly) == 4 and not any(subject.startswith(MONTHLY_SUBJECT) for subject in weekly), \
        "the weekly reader got W46 … W49, and no monthly email"
    sent = len(transport.batches)
    again = run(services=sender.services, sender=sender, now=DECEMBER + timedelta(hours=1))
    assert not again.monthly.created and again.monthly.reason == "monthly issue 2026-M12 already exists"
    run(services=sender.services, sender=sender, now=DECEMBER + timedelta(days=1))
    next_week = run(services=sender.services, sender=sender, now=SLOTS[4] + timedelta(minutes=1))
    assert next_week.monthly.label is None and len(transport.batches) == sent
    assert count(engine, Issue, Issue.kind == IssueKind.monthly.value) == 1
    with session_scope(engine) as session:
        assert previous_issue(session=session, week="2026-W50").week == "2026-W49", "a monthly issue is no previous issue"


def test_two_schedulers_opening_the_month_at_once_open_it_once(sender, transport):
    "two processes open December's email side by side: one creates it, the other finds it; each reader has one delivery"
    engine = sender.services.engine
    for name in ("a", "b", "c"):
        readers(engine, name)
    publish_week(engine, SLOTS[2], 48)
    run(services=sender.services, sender=sender, now=SLOTS[2] + timedelta(minutes=1))
    start, results = threading.Barrier(2), []

    def open_it():
        start.wait()
        results.append(sender.services.retrying(lambda: open_monthly(engine=engine, schedule=SCHEDULE, tz=UTC,
                                                                     now=DECEMBER + timedelta(minutes=1))))

    threads = [threading.Thread(target=open_it) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(opened.created for opened in results) == [False, True]
    assert results[0].issue.id == results[1].issue.id
    assert count(engine, Delivery, Delivery.issue_id == results[0].issue.id) == 3


def test_the_dry_run_shows_the_monthly_audience_on_its_day_and_when_it_goes_on_others(sender, transport, settings):
    "a week before: when and to how many; on 3 December before the slot: readers, segments and the weeks it covers"
    engine = sender.services.engine
    readers(engine, "weekly", monthly=False)
    readers(engine, "monthly")
    readers(engine, "writer", categories=["Writing"])
    readers(engine, "security", categories=["Security"])  # nothing in the month for them: no email
    for week, slot in enumerate(SLOTS[:3], 46):
        publish_week(engine, slot, week)
        run(services=sender.services, sender=sender, now=slot + timedelta(minutes=1))

    before = dry_run(services=sender.services, week=None, now=SLOTS[2] + timedelta(days=4))  # Monday of W49
    assert before.monthly.sentence(tz=UTC) == ("next monthly email: 2026-M12 on Thu 03 Dec 2026 09:00 UTC, to the "
                                               "3 monthly readers (each with what they skipped)")
    assert before.nothing["reads the monthly email"] == 3

    publish_week(engine, DECEMBER, 49)
    today = dry_run(services=sender.services, week=None, now=DECEMBER - timedelta(hours=1))
    assert today.monthly.sentence(tz=UTC) == (
        "monthly email 2026-M12 (due today, Thu 03 Dec 2026 09:00 UTC): 2 monthly readers in 2 segments, covering "
        "2026-W46, 2026-W47, 2026-W48, 2026-W49 (when it opens)")
    assert today.as_dict(tz=UTC)["monthly"]["readers"] == 2

    opened = run(services=sender.services, sender=sender, now=DECEMBER + timedelta(minutes=1)).monthly
    assert opened.created and opened.deliveries == 2
    after = dry_run(services=sender.services, week=None, now=DECEMBER + timedelta(hours=2))
    assert after.monthly.sentence(tz=UTC).startswith("monthly email 2026-M12 (opened, Thu 03 Dec 2026 09:00 UTC): "
                                                     "2 monthly readers in 2 segments")


def test_the_monthly_email_shows_each_verdict_as_its_weekly_issue_carried_it(sender, transport):
    "a verdict updated after its weekly issue went out shows, in the monthly email, the version that issue carried"
    from tests.test_verdict_changes import item

    engine = sender.services.engine
    readers(engine, "monthly")
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss"), ("Quill", "ssss"), published_at=SLOTS[1]
                                              - timedelta(days=2)), now=SLOTS[1] - timedelta(days=2))
    run(services=sender.services, sender=sender, now=SLOTS[1] + timedelta(minutes=1))
    store_comparison(engine=engine, item=item("c", ("Cellmind", "kksk"), ("Quill", "ssss"), published_at=SLOTS[1]
                                              - timedelta(days=2)), now=SLOTS[1] + timedelta(days=1))
    run(services=sender.services, sender=sender, now=DECEMBER + timedelta(minutes=1))
    ((subject, text),) = emails_to(transport, "monthly")
    assert subject == f"{MONTHLY_SUBJECT} — c title"
    assert "Panel: 4 ship / 0 skip" in text and "Panel: 1 ship / 3 skip" not in text


def test_a_month_with_no_weekly_issue_sends_no_monthly_email(sender, transport):
    "nothing published in November: no weekly issue, so on 3 December no monthly issue and no email"
    readers(sender.services.engine, "monthly")
    result = run(services=sender.services, sender=sender, now=DECEMBER + timedelta(minutes=1))
    assert result.opened is None and not result.monthly.created
    assert result.monthly.reason == "no weekly issue went out since the last monthly email: no monthly email 2026-M12"
    assert transport.batches == [] and count(sender.services.engine, Issue) == 0


def test_a_reader_who_already_has_every_covered_issue_gets_no_monthly_email(sender, transport):
    "a reader turned monthly after the month's last weekly issue has nothing new: no delivery, and no issue at all"
    engine = sender.services.engine
    reader = readers(engine, "late", monthly=False)
    publish_week(engine, SLOTS[2], 48)
    run(services=sender.services, sender=sender, now=SLOTS[2] + timedelta(minutes=1))
    turn_monthly(engine, reader)
    result = run(services=sender.services, sender=sender, now=DECEMBER + timedelta(minutes=1))
    assert not result.monthly.created and "no monthly reader has anything new in 2026-W48" in result.monthly.reason
    assert len(transport.batches) == 1


# -- pure rules ------------------------------------------------------------------------------------------------

def test_the_month_is_due_from_its_first_scheduled_slot_to_the_next_firing():
    "December's email is due from Thu 3 Dec 09:00 until Thu 10 Dec 09:00 (a catch-up); the label names the month"
    slot = month_slot(2026, 12, schedule=SCHEDULE, tz=UTC)
    assert (slot.label, slot.at, slot.until) == ("2026-M12", DECEMBER, DECEMBER + timedelta(weeks=1))
    assert due_month(DECEMBER - timedelta(minutes=1), schedule=SCHEDULE, tz=UTC) is None
    assert due_month(DECEMBER + timedelta(days=6), schedule=SCHEDULE, tz=UTC).label == "2026-M12"
    assert due_month(DECEMBER + timedelta(weeks=1), schedule=SCHEDULE, tz=UTC) is None
    assert next_month_slot(DECEMBER, schedule=SCHEDULE, tz=UTC).label == "2027-M01"
    assert month_covered("2026-M12") == "November 2026" and month_covered("2027-M01") == "December 2026"
    # A schedule that fires once a month: the window runs to next month's slot.
    assert due_month(datetime(2027, 1, 1, 5, tzinfo=UTC), schedule="0 9 1 * *", tz=UTC).label == "2026-M12"


def facts(id: int, category: str, spread: int) -> ComparisonFacts:
    return ComparisonFacts(id=id, category=category, published_at=DECEMBER, ship_pcts=(100, spread))


def test_segments_are_one_per_distinct_content_and_leave_out_what_a_reader_has():
    "readers of the same categories and the same issues had share a segment; what they had is left out; nothing left, no segment"
    ranked = [facts(1, "Writing", 0), facts(2, "Security", 10), facts(3, "Writing", 20)]
    issue_of = {1: 10, 2: 10, 3: 11}
    segments = plan_month(ranked, issue_of=issue_of, covers=[10, 11],
                          audience=[("", 0), ("writing", 0), ("writing;data", 0), ("", 1), ("security", 2),
                                    ("security", 1), ("", 3)])
    contents = {segment.comparison_ids: segment.readers for segment in segments}
    assert contents == {(1, 2, 3): (("", 0),), (1, 3): (("writing", 0), ("writing;data", 0)), (3,): (("", 1),),
                        (2,): (("security", 2),)}
