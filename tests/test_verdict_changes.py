"""Verdicts that changed (issue 16, item 3): an update to a comparison readers already got is kept as a new
version; a flipped or moved panel verdict reaches, with the next issue, the readers who got the original —
and nobody else. On real SQLite and PostgreSQL, through the importer, the claim and the send loop."""

from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from digest.claim.opening import open_issue
from digest.config import Settings
from digest.editor.dry_run import dry_run
from digest.editor.preview import preview
from digest.importing.comparisons import store_comparison
from digest.importing.revisions import Panel, changed, minds
from digest.render import mail
from digest.web.factory import create_app
from storage.changes import load_changes
from storage.db import session_scope
from storage.models import Comparison, Delivery, Segment, Subscriber, VerdictChange
from storage.records import MindChange
from tests.factories import RecordingTransport, add_subscribers, build_sender

UTC = timezone.utc
W47 = datetime(2026, 11, 19, 9, 0, tzinfo=UTC)  # Thursday 09:00 of 2026-W47
WEEK = timedelta(days=7)
SEATS = ("Builder", "Skeptic", "Futurist", "Founder")


def item(slug, *tools, published_at=W47 - timedelta(days=2), title=None):
    """A comparison in the contract's format; each tool is (name, verdicts[, panel ship %]), e.g.
    ("Cellmind", "ssss"): s a ship, k a skip, one letter per seat."""
    return {
        "slug": slug, "title": title or f"{slug} title", "url": f"https://verdicts.example.com/compare/{slug}",
        "category": "Developer Tools", "published_at": published_at.isoformat(), "community_votes": 10,
        "tools": [{"name": name, "tagline": "", "entry_price": "Free", "panel_ship_pct": pct[0] if pct else None,
                   "reviews": [{"persona": seat, "score": 80 if v == "s" else 40, "verdict": "ship" if v == "s" else "skip",
                                "text": f"{seat} on {name}."} for seat, v in zip(SEATS, verdicts)]}
                  for name, verdicts, *pct in tools],
    }


@pytest.fixture
def sender(db_url, tmp_path):
    settings = Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                        transport="outbox", outbox_dir=tmp_path / "outbox", timezone="UTC")
    sender = build_sender(settings, transport=RecordingTransport(), sleep=lambda s: None)
    yield sender
    sender.services.engine.dispose()


def send_week(sender, week: str, now: datetime):
    opened = open_issue(engine=sender.services.engine, week=week, now=now)
    if opened.issue is not None:
        sender.send_issue(opened.issue)
    return opened


def texts_by_reader(transport) -> dict[str, str]:
    return {r.email: batch.text for batch in transport.batches for r in batch.recipients}


def waiting(engine) -> list[VerdictChange]:
    with session_scope(engine) as session:
        return list(session.execute(select(VerdictChange).where(VerdictChange.issue_id.is_(None))).scalars())


def test_a_flipped_verdict_reaches_the_readers_of_the_original_and_nobody_else(sender):
    """Ada and Bo got W47 with Cellmind at 4 ship; the panel turns on it; W48 tells Ada and Bo, not Cy
    (subscribed since) and not Di (paused during W47)"""
    engine, transport = sender.services.engine, sender.services.transport
    store_comparison(engine=engine, item=item("cellmind-vs-quill", ("Cellmind", "ssss"), ("Quill", "sssk")), now=W47)
    ada, bo, di = add_subscribers(engine, 3)
    with session_scope(engine) as session:
        session.execute(update(Subscriber).where(Subscriber.id == di).values(paused_until=W47 + timedelta(days=3)))
    assert send_week(sender, "2026-W47", W47).deliveries == 2

    cy, = add_subscribers(engine, 1, prefix="late")
    turned = item("cellmind-vs-quill", ("Cellmind", "kksk"), ("Quill", "sssk"))
    turned["tools"][1]["reviews"][0]["score"] = 85  # a nudge on Quill: not news
    assert store_comparison(engine=engine, item=turned, now=W47 + timedelta(days=2)) == "updated"
    store_comparison(engine=engine, item=item("gridwise-vs-tabula", ("Gridwise", "ssss"), ("Tabula", "kkkk"),
                                              published_at=W47 + WEEK - timedelta(days=1)), now=W47 + WEEK)
    transport.batches.clear()
    opened = send_week(sender, "2026-W48", W47 + WEEK)

    assert (opened.changes, opened.told, opened.deliveries) == (1, 2, 4)
    texts = texts_by_reader(transport)
    with session_scope(engine) as session:
        emails = dict(session.execute(select(Subscriber.id, Subscriber.email)).all())
    for reader in (ada, bo):
        assert "VERDICTS THAT CHANGED" in texts[emails[reader]]
        assert "    Panel: 4 ship / 0 skip → 1 ship / 3 skip (100% → 25% ship)\n" in texts[emails[reader]]
        assert "    Cellmind: ship → skip\n" in texts[emails[reader]]
    for reader in (cy, di):
        assert "VERDICTS THAT CHANGED" not in texts[emails[reader]]
        assert "Gridwise" in texts[emails[reader]] and "Cellmind" not in texts[emails[reader]]
    assert waiting(engine) == []


def test_the_change_names_who_changed_their_mind_and_the_old_issue_keeps_its_version(sender):
    """the change says Builder, Skeptic and Founder turned to skip; W47's email and archive still show 4 ship,
    after W48 opened"""
    engine = sender.services.engine
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss"), ("Quill", "ssss")), now=W47)
    add_subscribers(engine, 1)
    w47 = send_week(sender, "2026-W47", W47).issue
    store_comparison(engine=engine, item=item("c", ("Cellmind", "kksk"), ("Quill", "ssss")), now=W47 + timedelta(days=1))

    change, = waiting(engine)
    assert (change.before_ship, change.before_skip, change.after_ship, change.after_skip) == (4, 0, 1, 3)
    assert (change.before_pct, change.after_pct, change.before_version, change.after_version) == (100, 25, 1, 2)
    with session_scope(engine) as session:
        loaded = load_changes(session=session, ids=[change.id])[0]
        old = mail.render_segment(session=session, renderer=sender.services.renderer, settings=sender.services.settings,
                                  week="2026-W47", opened_at=W47, comparison_ids=[change.comparison_id],
                                  audience="", issue_id=w47.id)
    assert loaded.minds == (MindChange("Builder", "ship", "skip"), MindChange("Skeptic", "ship", "skip"),
                            MindChange("Founder", "ship", "skip"))
    assert (loaded.tool, loaded.original_week) == ("Cellmind", "2026-W47")
    assert "Panel: 4 ship / 0 skip" in old.text and "Panel: 1 ship / 3 skip" not in old.text
    # The next issue opens (and carries the change): W47 still shows the version it went out with.
    news = item("n", ("N1", "ssss"), ("N2", "kkkk"), published_at=W47 + WEEK)
    store_comparison(engine=engine, item=news, now=W47 + WEEK)
    assert send_week(sender, "2026-W48", W47 + WEEK).claimed == 1
    app = create_app(sender.services.settings, engine=engine, transport=RecordingTransport())
    with TestClient(app) as client:
        page = client.get("/archive/2026-W47")
    assert page.status_code == 200 and "4 ship / 0 skip" in page.text and "1 ship / 3 skip" not in page.text


def test_a_change_rides_along_and_never_opens_an_issue_by_itself(sender):
    """W48 has nothing new: no issue, the change waits; W49 has a new comparison and carries it"""
    engine = sender.services.engine
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss"), ("Quill", "ssss")), now=W47)
    add_subscribers(engine, 2)
    send_week(sender, "2026-W47", W47)
    store_comparison(engine=engine, item=item("c", ("Cellmind", "kkkk"), ("Quill", "ssss")), now=W47 + timedelta(days=1))

    assert send_week(sender, "2026-W48", W47 + WEEK).issue is None
    assert len(waiting(engine)) == 1
    store_comparison(engine=engine, item=item("n", ("New", "ssss"), ("Other", "kkkk"), published_at=W47 + 2 * WEEK),
                     now=W47 + 2 * WEEK)
    opened = send_week(sender, "2026-W49", W47 + 2 * WEEK)
    assert (opened.changes, opened.told) == (1, 2) and waiting(engine) == []


def test_only_what_readers_were_not_told_is_news(sender):
    """a waiting change is measured again by each new version (back near where it was: nothing to tell);
    once carried, the next change is measured from what readers were told"""
    engine = sender.services.engine
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss", 90), ("Quill", "ssss")), now=W47)
    add_subscribers(engine, 1)
    send_week(sender, "2026-W47", W47)
    at = W47 + timedelta(days=1)
    store_comparison(engine=engine, item=item("c", ("Cellmind", "kkkk", 10), ("Quill", "ssss")), now=at)
    assert len(waiting(engine)) == 1
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss", 80), ("Quill", "ssss")), now=at)
    assert waiting(engine) == [], "90 % → 80 % against what readers got: not news"

    store_comparison(engine=engine, item=item("c", ("Cellmind", "kkkk", 10), ("Quill", "ssss")), now=at)
    store_comparison(engine=engine, item=item("n", ("New", "ssss"), ("Other", "kkkk"), published_at=W47 + WEEK),
                     now=W47 + WEEK)
    assert send_week(sender, "2026-W48", W47 + WEEK).changes == 1
    store_comparison(engine=engine, item=item("c", ("Cellmind", "kkkk", 30), ("Quill", "ssss")), now=W47 + WEEK)
    assert waiting(engine) == [], "10 % → 30 % after readers were told of 10 %: below the threshold"
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss", 90), ("Quill", "ssss")), now=W47 + WEEK)
    back, = waiting(engine)
    assert (back.before_pct, back.after_pct, back.before_version, back.after_version) == (10, 90, 4, 6)


def test_an_unclaimed_comparison_updates_without_a_change_or_a_kept_version(sender):
    """before any issue carried it, an update is only the newest content"""
    engine = sender.services.engine
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss"), ("Quill", "ssss")), now=W47)
    store_comparison(engine=engine, item=item("c", ("Cellmind", "kkkk"), ("Quill", "ssss")), now=W47)
    assert waiting(engine) == []
    with session_scope(engine) as session:
        assert session.execute(select(Comparison.version)).scalar_one() == 2


def test_segments_split_by_the_original_issues_each_reader_got(sender):
    """two comparisons from two past issues change; each reader's segment carries exactly the changes of
    the issues they got, and every delivery sits in one segment"""
    engine, transport = sender.services.engine, sender.services.transport
    store_comparison(engine=engine, item=item("a", ("A1", "ssss"), ("A2", "ssss")), now=W47)
    first, = add_subscribers(engine, 1)
    send_week(sender, "2026-W47", W47)
    second, = add_subscribers(engine, 1)
    store_comparison(engine=engine, item=item("b", ("B1", "ssss"), ("B2", "ssss"), published_at=W47 + WEEK),
                     now=W47 + WEEK)
    send_week(sender, "2026-W48", W47 + WEEK)
    third, = add_subscribers(engine, 1)
    at = W47 + WEEK + timedelta(days=1)
    store_comparison(engine=engine, item=item("a", ("A1", "kkkk"), ("A2", "ssss")), now=at)
    store_comparison(engine=engine, item=item("b", ("B1", "ssss"), ("B2", "kkkk"), published_at=W47 + WEEK), now=at)
    store_comparison(engine=engine, item=item("n", ("N1", "ssss"), ("N2", "kkkk"), published_at=W47 + 2 * WEEK),
                     now=W47 + 2 * WEEK)
    transport.batches.clear()
    opened = send_week(sender, "2026-W49", W47 + 2 * WEEK)

    assert (opened.changes, opened.told, opened.deliveries) == (2, 2, 3)
    with session_scope(engine) as session:
        rows = session.execute(select(Delivery.subscriber_id, Segment.change_ids, Segment.size)
                               .join(Segment, Segment.id == Delivery.segment_id)
                               .where(Delivery.issue_id == opened.issue.id)).all()
        carried = {c.id: c.comparison_id for c in session.execute(select(VerdictChange)).scalars()}
        slugs = dict(session.execute(select(Comparison.id, Comparison.slug)).all())
    got = {subscriber: sorted(slugs[carried[int(i)]] for i in ids.split(",") if i) for subscriber, ids, _ in rows}
    assert got == {first: ["a", "b"], second: ["b"], third: []}
    assert all(size == 1 for _, _, size in rows)
    texts = [batch.text for batch in transport.batches]
    assert sum("VERDICTS THAT CHANGED" in text for text in texts) == 2


# -- the rule, without a database -----------------------------------------------------------------------------

def panel(verdicts: str, pct=None, name="Cellmind") -> Panel:
    seats = (*SEATS, "Guest")
    return Panel(name=name, verdicts=tuple(zip(seats, ("ship" if v == "s" else "skip" for v in verdicts))),
                 stated_pct=pct)


@pytest.mark.parametrize("before, after, news", [
    ("ssss", "kkkk", True),   # 100 → 0: flipped
    ("sssk", "kkks", True),   # 75 → 25: flipped
    ("sssk", "sskk", True),   # 75 → 50: ship → split is no flip, but a move of 25 points is news
    ("sssk", "ssss", True),   # 75 → 100: one seat of four is 25 points
    ("sssss", "ssssk", False),  # 100 → 80 of five seats: still ship, 20 points
    ("ssssk", "sssss", False),
    ("", "", False),          # no panel at all
])
def test_a_change_is_a_flip_or_a_move_of_25_points(before, after, news):
    """ship ↔ skip is news, and so is a move of 25 points or more; less is not"""
    assert changed(panel(before), panel(after)) is news


def test_the_sites_own_ship_percentage_counts_over_the_tally():
    """panel_ship_pct from the site wins over the share of votes: 70 → 40 is a move of 30"""
    assert changed(panel("sssk", pct=70), panel("sssk", pct=40))
    assert not changed(panel("sssk", pct=70), panel("sssk", pct=50))


def test_minds_lists_turns_then_joins_then_leaves():
    """a seat that turned, one that joined, one that left"""
    before = Panel(name="X", verdicts=(("Builder", "ship"), ("Skeptic", "ship")), stated_pct=None)
    after = Panel(name="X", verdicts=(("Builder", "skip"), ("Founder", "skip")), stated_pct=None)
    assert minds(before, after) == (MindChange("Builder", "ship", "skip"), MindChange("Founder", None, "skip"),
                                    MindChange("Skeptic", "ship", None))


def test_the_dry_run_lists_the_changes_the_issue_would_carry_and_to_how_many(sender):
    """before W48 opens, the dry run names each changed verdict, before → after, and counts the readers of
    W47 still in the audience (one of the two unsubscribed since)"""
    engine = sender.services.engine
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss"), ("Quill", "ssss"), title="Cellmind vs Quill"),
                     now=W47)
    ada, bo = add_subscribers(engine, 2)
    send_week(sender, "2026-W47", W47)
    with session_scope(engine) as session:
        session.execute(update(Subscriber).where(Subscriber.id == bo).values(status="unsubscribed"))
    store_comparison(engine=engine, item=item("c", ("Cellmind", "kksk"), ("Quill", "ssss"), title="Cellmind vs Quill"),
                     now=W47 + timedelta(days=1))
    store_comparison(engine=engine, item=item("n", ("New", "ssss"), ("Other", "kkkk"), published_at=W47 + WEEK),
                     now=W47 + WEEK)

    plan = dry_run(services=sender.services, week="2026-W48", now=W47 + WEEK)
    assert plan.changes.lines == ["Cellmind vs Quill: Cellmind 4 ship / 0 skip → 1 ship / 3 skip (first sent in 2026-W47)"]
    assert plan.changes.readers == 1
    assert plan.as_dict(tz=UTC)["verdicts_changed"]["readers"] == 1
    send_week(sender, "2026-W48", W47 + WEEK)
    store_comparison(engine=engine, item=item("m", ("More", "ssss"), ("Less", "kkkk"), published_at=W47 + 2 * WEEK),
                     now=W47 + 2 * WEEK)
    assert dry_run(services=sender.services, week="2026-W49", now=W47 + 2 * WEEK).changes is None, "carried once"


def test_the_preview_shows_a_reader_the_changes_they_would_get(sender):
    """before W48 opens, `digest preview --as` shows Ada (who got W47) the section and Cy (who did not)
    none; the sample reader sees every change; once open, each reader sees their segment's"""
    engine = sender.services.engine
    store_comparison(engine=engine, item=item("c", ("Cellmind", "ssss"), ("Quill", "ssss")), now=W47)
    add_subscribers(engine, 1, prefix="ada")
    send_week(sender, "2026-W47", W47)
    add_subscribers(engine, 1, prefix="cy")
    store_comparison(engine=engine, item=item("c", ("Cellmind", "kkkk"), ("Quill", "ssss")), now=W47 + timedelta(days=1))
    store_comparison(engine=engine, item=item("n", ("New", "ssss"), ("Other", "kkkk"), published_at=W47 + WEEK),
                     now=W47 + WEEK)
    with session_scope(engine) as session:
        ada, cy = session.execute(select(Subscriber.email).order_by(Subscriber.id)).scalars().all()

    def shows_changes(as_email, now=W47 + WEEK):
        text = preview(services=sender.services, week="2026-W48", now=now, as_email=as_email).email.text
        return "VERDICTS THAT CHANGED" in text

    assert (shows_changes(ada), shows_changes(cy), shows_changes(None)) == (True, False, True)
    open_issue(engine=engine, week="2026-W48", now=W47 + WEEK)
    assert (shows_changes(ada), shows_changes(cy), shows_changes(None)) == (True, False, True)
