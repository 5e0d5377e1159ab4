"""Casting votes in the store (issue 17), on SQLite and PostgreSQL: one standing vote per reader and tool,
every cast an event in order, the same vote twice writes nothing."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from digest.claim.opening import open_issue
from digest.votes.casting import ballot, cast_vote, readers_tally, why_not
from digest.votes.voters import voter_pseudonym
from storage.db import make_engine, session_scope
from storage.models import Comparison, Subscriber, Vote, VoteEvent
from storage.votes import events_after, forget_votes, reader_votes
from tests.factories import add_comparison, add_subscribers

NOW = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)
SECRET = "k" * 32


@pytest.fixture
def store(engine):
    add_comparison(engine, slug="cellmind-vs-quill", published_at=NOW - timedelta(days=1))
    add_comparison(engine, slug="unsent", published_at=NOW + timedelta(days=3))
    readers = add_subscribers(engine, 2)
    open_issue(engine=engine, week="2026-W48", now=NOW)
    return engine, readers


def vote(engine, reader, slug="cellmind-vs-quill", tool="1", choice="ship", now=NOW):
    with session_scope(engine) as session:
        subscriber = session.get(Subscriber, reader)
        asked = ballot(session=session, slug=slug, tool=tool, choice=choice)
        return cast_vote(session=session, secret_key=SECRET, subscriber=subscriber, issue_id=None, ballot=asked, now=now)


def test_one_vote_per_reader_and_tool_the_other_choice_replaces_it(store):
    """ship, ship again (nothing), then skip: one standing vote, two events, the second replacing the first"""
    engine, (ada, bo) = store
    assert [vote(engine, ada), vote(engine, ada), vote(engine, ada, choice="skip")] == ["recorded", "unchanged", "changed"]
    assert vote(engine, bo) == "recorded"
    with session_scope(engine) as session:
        assert session.execute(select(Vote.choice).where(Vote.subscriber_id == ada)).scalars().all() == ["skip"]
        events = events_after(session=session, after=0, limit=10)
        asked = ballot(session=session, slug="cellmind-vs-quill", tool="1", choice="ship")
        assert readers_tally(session=session, ballot=asked) == (1, 1)
    assert [(e.choice, e.replaces) for e in events] == [("ship", None), ("skip", events[0].id), ("ship", None)]
    assert events[0].voter == events[1].voter == voter_pseudonym(SECRET, ada) != events[2].voter
    assert [e.id for e in events] == sorted(e.id for e in events)


@pytest.mark.parametrize("slug, tool, choice", [
    ("unsent", "1", "ship"),  # no issue carried it: never in an email
    ("no-such-slug", "1", "ship"),
    ("cellmind-vs-quill", "3", "ship"),  # two tools
    ("cellmind-vs-quill", "0", "ship"),
    ("cellmind-vs-quill", "1", "maybe"),
    ("cellmind-vs-quill", "١", "ship"),  # an Arabic-Indic digit is a digit to str.isdigit
])
def test_a_link_that_names_nothing_is_no_ballot(store, slug, tool, choice):
    """unknown or unsent slugs, tools out of range, other choices: no ballot"""
    engine, _ = store
    with session_scope(engine) as session:
        assert ballot(session=session, slug=slug, tool=tool, choice=choice) is None


def test_paused_and_unsubscribed_readers_cannot_vote(store):
    """a pause in force or an unsubscribe is a reason; a pause that ended is none"""
    engine, (ada, _) = store
    with session_scope(engine) as session:
        reader = session.get(Subscriber, ada)
        assert why_not(reader, now=NOW) is None
        reader.paused_until = NOW + timedelta(days=7)
        assert why_not(reader, now=NOW) == "paused" and why_not(reader, now=NOW + timedelta(days=8)) is None
        reader.status = "unsubscribed"
        assert why_not(reader, now=NOW + timedelta(days=8)) == "unsubscribed"


def test_a_readers_votes_are_in_their_export_and_go_with_them(store):
    """reader_votes lists them; forget_votes removes them from the tally, the events stay pseudonymous"""
    engine, (ada, _) = store
    vote(engine, ada, tool="2", choice="skip")
    with session_scope(engine) as session:
        assert [(v["comparison"], v["tool"], v["choice"]) for v in reader_votes(session=session, subscriber_id=ada)] == \
            [("cellmind-vs-quill", 2, "skip")]
        forget_votes(session=session, subscriber_id=ada)
    with session_scope(engine) as session:
        assert reader_votes(session=session, subscriber_id=ada) == []
        assert session.execute(select(VoteEvent.voter)).scalars().all() == [voter_pseudonym(SECRET, ada)]


def test_each_event_names_the_tool_as_the_link_does_and_pages_by_id(store):
    """tools 2 and 1 voted, then tool 2 changed: the events say tool 2, 1, 2 (1-based, as links and the site
    have it); paging from an id returns only later events, at most ``limit`` of them, in id order"""
    engine, (ada, bo) = store
    vote(engine, ada, tool="2"), vote(engine, bo, tool="1"), vote(engine, ada, tool="2", choice="skip")
    with session_scope(engine) as session:
        events = events_after(session=session, after=0, limit=10)
        assert [(e.comparison, e.tool, e.choice) for e in events] == \
            [("cellmind-vs-quill", 2, "ship"), ("cellmind-vs-quill", 1, "ship"), ("cellmind-vs-quill", 2, "skip")]
        first, second, third = (e.id for e in events)
        assert [e.id for e in events_after(session=session, after=0, limit=2)] == [first, second]
        assert [e.id for e in events_after(session=session, after=first, limit=10)] == [second, third]
        assert events_after(session=session, after=third, limit=10) == []


def test_a_readers_export_lists_each_standing_vote_whole_in_the_order_cast(store):
    """tool 2 voted, then tool 1, then tool 2 changed a day later: the export lists tool 1 then tool 2, each with
    its comparison's slug and title, the tool's number and name, the choice and when it stood"""
    engine, (ada, _) = store
    vote(engine, ada, tool="2"), vote(engine, ada, tool="1", now=NOW + timedelta(hours=1))
    vote(engine, ada, tool="2", choice="skip", now=NOW + timedelta(days=1))
    with session_scope(engine) as session:
        comparison = session.execute(select(Comparison).where(Comparison.slug == "cellmind-vs-quill")).scalar_one()
        title, names = comparison.title, {tool.position: tool.name for tool in comparison.tools}
        exported = reader_votes(session=session, subscriber_id=ada)
    assert exported == [
        {"comparison": "cellmind-vs-quill", "title": title, "tool": 1, "tool_name": names[0], "choice": "ship",
         "cast_at": (NOW + timedelta(hours=1)).isoformat()},
        {"comparison": "cellmind-vs-quill", "title": title, "tool": 2, "tool_name": names[1], "choice": "skip",
         "cast_at": (NOW + timedelta(days=1)).isoformat()},
    ]


@pytest.mark.postgres
def test_concurrent_votes_commit_their_events_in_id_order(postgres_url):
    """two transactions cast at once: the second waits for the first's lock, so ids follow commit order"""
    import threading

    engine = make_engine(postgres_url)
    add_comparison(engine, slug="c", published_at=NOW - timedelta(days=1))
    first, second = add_subscribers(engine, 2)
    open_issue(engine=engine, week="2026-W48", now=NOW)
    holding, release = threading.Event(), threading.Event()

    def slow_vote():
        with session_scope(engine) as session:
            asked = ballot(session=session, slug="c", tool="1", choice="ship")
            cast_vote(session=session, secret_key=SECRET, subscriber=session.get(Subscriber, first), issue_id=None,
                      ballot=asked, now=NOW)
            holding.set()
            release.wait(5)

    thread = threading.Thread(target=slow_vote)
    thread.start()
    holding.wait(5)
    waiter = threading.Thread(target=vote, args=(engine, second, "c"))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive(), "the second vote waits for the first transaction"
    release.set()
    thread.join()
    waiter.join()
    with session_scope(engine) as session:
        voters = [e.voter for e in events_after(session=session, after=0, limit=10)]
    assert voters == [voter_pseudonym(SECRET, first), voter_pseudonym(SECRET, second)]
    engine.dispose()
