"""A reader's votes are their data (issue 17, item 3): in the preference centre's download, and gone with a
delete (the readers' tally and the stats drop them; the pseudonymous vote events stay), on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import create_engine, func, select
from sqlmodel import Session

from digest.claim.opening import open_issue
from digest.subscribers.subscriptions import forget
from digest.track.stats import issue_stats
from digest.votes.casting import ballot, readers_tally
from storage.db import session_scope
from storage.models import Subscriber, Vote, VoteEvent
from tests.factories import add_comparison, add_subscribers
from tests.test_stats import SENT_AT, SLUG, cast, deliveries_of
from tests.test_web_subscriber import engine_of, form_post, token_for


def two_voters(engine) -> tuple[int, int]:
    """Week 48 carried cellmind-vs-quill; Ada voted ship on the first and skip on the
    second, Bo ship on the first."""
    add_comparison(engine, slug=SLUG, title="Cellmind vs Quill", published_at=SENT_AT - timedelta(days=1))
    ada, bo = add_subscribers(engine, 2)
    open_issue(engine=engine, week="2026-W48", now=SENT_AT)
    deliveries_of(engine, "2026-W48")
    cast(engine, ada, "1", "ship", week="2026-W48", now=SENT_AT + timedelta(hours=1))
    cast(engine, ada, "2", "skip", week="2026-W48", now=SENT_AT + timedelta(hours=2))
    cast(engine, bo, "1", "ship", week="2026-W48", now=SENT_AT + timedelta(hours=3))
    return ada, bo


def tally_of_tool_1(engine) -> tuple[int, int]:
    with session_scope(engine) as session:
        return readers_tally(session=session, ballot=ballot(session=session, slug=SLUG, tool="1", choice="ship"))


def test_the_download_carries_the_readers_votes_and_no_one_elses(web):
    "Ada downloads her data: her two standing votes, with the comparison, tool, choice and when; not Bo's"
    engine = engine_of(web)
    ada, _ = two_voters(engine)
    response = form_post(web, f"/p/{token_for(web, ada)}", action="export")
    assert response.status_code == 200, response.text
    votes = json.loads(response.text)["votes"]
    assert [(v["comparison"], v["title"], v["tool"], v["choice"], v["cast_at"]) for v in votes] == [
        (SLUG, "Cellmind vs Quill", 1, "ship", "2026-11-26T10:00:00+00:00"),
        (SLUG, "Cellmind vs Quill", 2, "skip", "2026-11-26T11:00:00+00:00")]
    assert all(v["tool_name"] for v in votes)


def test_a_reader_who_never_voted_downloads_an_empty_list(web):
    "Cy got the issue and never voted: the download's votes are an empty list, not missing"
    engine = engine_of(web)
    two_voters(engine)
    [cy] = add_subscribers(engine, 1)
    assert json.loads(form_post(web, f"/p/{token_for(web, cy)}", action="export").text)["votes"] == []


def test_a_delete_takes_the_votes_the_tally_and_the_stats_drop_them_the_events_stay(web):
    "Ada deletes her data: her votes are gone, tool 1's tally is Bo's alone, week 48 has one voter, three events stay"
    engine = engine_of(web)
    ada, bo = two_voters(engine)
    assert tally_of_tool_1(engine) == (2, 0)
    deleted = form_post(web, f"/p/{token_for(web, ada)}", action="delete", confirm="yes")
    assert deleted.status_code == 303, deleted.text
    with Session(engine) as session:
        assert session.scalars(select(Vote.subscriber_id)).all() == [bo]
        assert session.scalar(select(func.count()).select_from(VoteEvent)) == 3  # pseudonymous: they name no one
    assert tally_of_tool_1(engine) == (1, 0)
    [week48] = issue_stats(engine=engine)
    assert (week48.votes, week48.voters, week48.clickers) == (1, 1, 1)


def test_the_delete_holds_on_sqlite_without_the_foreign_key_pragma(sqlite_url):
    "a connection that never turned foreign keys on (not storage.db's): the votes still go with the reader"
    plain = create_engine(sqlite_url)  # SQLite's default: ON DELETE CASCADE is not enforced
    try:
        ada, bo = two_voters(plain)
        with Session(plain) as session:
            assert session.connection().exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
            forget(session=session, subscriber=session.get(Subscriber, ada), now=SENT_AT + timedelta(days=1))
            session.commit()
        with Session(plain) as session:
            assert session.scalars(select(Vote.subscriber_id)).all() == [bo]
    finally:
        plain.dispose()
