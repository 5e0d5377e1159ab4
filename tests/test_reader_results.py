"""The next issue closes the loop (issue 17, item 5): the readers' votes on the previous issue's comparisons
reach the readers who got it, fixed when the new issue opens; on SQLite and PostgreSQL."""

from datetime import datetime, timedelta, timezone

from fastapi.testclient import TestClient
from sqlalchemy import select

from digest.claim.opening import open_issue
from digest.votes.casting import ballot, cast_vote
from digest.votes.results import MIN_VOTES, ReaderResult, reader_results
from digest.web.factory import create_app
from storage.db import session_scope
from storage.models import Subscriber
from storage.reader_results import ToolVotes
from tests.factories import RecordingTransport, add_comparison, add_subscribers
from tests.test_verdict_changes import send_week, sender  # noqa: F401  (the fixture)

UTC = timezone.utc
W47 = datetime(2026, 11, 19, 9, 0, tzinfo=UTC)
WEEK = timedelta(days=7)


def vote(engine, readers, slug, tool, choice):
    with session_scope(engine) as session:
        for reader in readers:
            asked = ballot(session=session, slug=slug, tool=str(tool), choice=choice)
            cast_vote(session=session, secret_key="k" * 32, subscriber=session.get(Subscriber, reader), issue_id=None,
                      ballot=asked, now=W47 + timedelta(days=1))


def test_the_readers_of_the_last_issue_hear_how_readers_voted(sender):
    """six readers got W47 and voted 4 ship / 2 skip on Tool A; W48 tells them "Readers: 67% would ship", not
    the reader who joined since; votes cast after W48 opened do not change its figures"""
    engine, transport = sender.services.engine, sender.services.transport
    add_comparison(engine, slug="first", title="First vs Second", published_at=W47 - timedelta(days=1))
    readers = add_subscribers(engine, 6)
    send_week(sender, "2026-W47", W47)
    vote(engine, readers[:4], "first", 1, "ship")
    vote(engine, readers[4:], "first", 1, "skip")
    late, = add_subscribers(engine, 1, prefix="late")
    add_comparison(engine, slug="next", published_at=W47 + WEEK - timedelta(days=1))
    transport.batches.clear()
    opened = send_week(sender, "2026-W48", W47 + WEEK)

    assert opened.results_told == 6
    with session_scope(engine) as session:
        emails = dict(session.execute(select(Subscriber.id, Subscriber.email)).all())
    texts = {r.email: batch.text for batch in transport.batches for r in batch.recipients}
    htmls = {r.email: batch.html for batch in transport.batches for r in batch.recipients}
    for reader in readers:
        assert "WHAT READERS SAID" in texts[emails[reader]]
        assert "Readers: 67% would ship Tool " in texts[emails[reader]] and "(6 votes)" in texts[emails[reader]]
    assert "WHAT READERS SAID" not in texts[emails[late]]
    assert "What readers said" in htmls[emails[readers[0]]] and "What readers said" not in htmls[emails[late]]

    vote(engine, readers[4:], "first", 1, "ship")  # after the opening: W48 keeps what it fixed
    app = create_app(sender.services.settings, engine=engine, transport=RecordingTransport())
    with TestClient(app) as client:
        page = client.get("/archive/2026-W48").text
    assert "Readers: 67% would ship" in page


def test_too_few_votes_make_no_line_and_no_split(sender):
    """four voters on a tool is not a verdict: no result, and W48 has one segment for everyone"""
    engine = sender.services.engine
    add_comparison(engine, slug="first", published_at=W47 - timedelta(days=1))
    readers = add_subscribers(engine, MIN_VOTES - 1)
    send_week(sender, "2026-W47", W47)
    vote(engine, readers, "first", 2, "ship")
    add_comparison(engine, slug="next", published_at=W47 + WEEK - timedelta(days=1))
    opened = send_week(sender, "2026-W48", W47 + WEEK)
    assert (opened.results_told, opened.issue.reader_results) == (0, "")


def tool(comparison_id, position, ship, skip, name=None):
    return ToolVotes(comparison_id=comparison_id, title=f"C{comparison_id}", url="https://x.example/c",
                     position=position, tool=name or f"T{comparison_id}.{position}", ship=ship, skip=skip)


def test_the_line_names_the_tool_most_readers_would_ship():
    """per comparison the tool with the largest ship share wins (then more voters); under MIN_VOTES is left out"""
    results = reader_results([tool(1, 0, 3, 2), tool(1, 1, 5, 1), tool(2, 0, 4, 4), tool(2, 1, 8, 8), tool(3, 0, 2, 1)])
    assert [(r.comparison_id, r.tool, r.pct, r.votes) for r in results] == [(1, "T1.1", 83, 6), (2, "T2.1", 50, 16)]
    assert ReaderResult(comparison_id=1, title="t", url="u", tool="Cellmind", pct=62, votes=34).line == \
        "Readers: 62% would ship Cellmind"


def test_the_preview_shows_the_results_to_a_reader_of_the_last_issue(sender):
    """before and after W48 opens, `digest preview --as` shows the results to a reader of W47, not to a new one"""
    from digest.editor.preview import preview

    engine = sender.services.engine
    add_comparison(engine, slug="first", published_at=W47 - timedelta(days=1))
    readers = add_subscribers(engine, 5)
    send_week(sender, "2026-W47", W47)
    vote(engine, readers, "first", 1, "ship")
    add_subscribers(engine, 1, prefix="late")
    add_comparison(engine, slug="next", published_at=W47 + WEEK - timedelta(days=1))
    with session_scope(engine) as session:
        emails = session.execute(select(Subscriber.email).order_by(Subscriber.id)).scalars().all()

    def told(as_email):
        return "Readers: 100% would ship" in preview(services=sender.services, week="2026-W48", now=W47 + WEEK,
                                                     as_email=as_email).email.text

    assert (told(emails[0]), told(emails[-1]), told(None)) == (True, False, True)
    open_issue(engine=engine, week="2026-W48", now=W47 + WEEK)
    assert (told(emails[0]), told(emails[-1]), told(None)) == (True, False, True)
