from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables)
from storage.db import make_engine
from storage.migrate import alembic_config, current, upgrade
from tests.conftest import _postgres_database


def test_upgrade_creates_every_table_and_records_the_revision(db_url, engine):
    "a fresh database upgraded by Alembic has every table the code uses, at the newest revision"
    tables = set(inspect(engine).get_table_names())
    assert {"comparison", "tool", "review", "subscriber", "issue", "issue_comparison", "segment",
            "delivery", "event", "suppression"} <= tables
    assert current(db_url) == ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()


def test_the_migrations_build_exactly_the_models(db_url, engine):
    "no model change is missing a migration: Alembic finds nothing to autogenerate"
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert differences == []


def test_the_newest_revision_read_from_the_file_names_is_alembics_head():
    "every command checks the store against head() without loading Alembic: the file names must say what Alembic reads in the files"
    from storage.migrate import MIGRATIONS, head

    scripts = ScriptDirectory(str(MIGRATIONS))
    assert head() == scripts.get_current_head()
    for script in scripts.walk_revisions():
        assert Path(script.path).name.startswith(f"{script.revision}_")
        assert script.down_revision is None or int(script.down_revision) == int(script.revision) - 1


def test_sqlite_runs_in_wal_mode(sqlite_url):
    "SQLite runs in WAL mode so readers never wait for the sender"
    from storage.db import make_engine

    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_a_transaction_waits_out_an_unavailable_database_then_gives_up():
    "two 'server closed the connection' errors are waited out; past the budget the error surfaces"
    from sqlalchemy.exc import OperationalError

    from storage.db import retrying

    failures = [OperationalError("UPDATE …", {}, Exception("server closed the connection"))] * 2
    slept: list[float] = []

    def work():
        if failures:
            raise failures.pop()
        return "done"

    assert retrying(work, budget=10, sleep=slept.append) == "done"
    assert slept == [0.2, 0.4]

    def down():
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    slept.clear()
    import pytest

    with pytest.raises(OperationalError):
        retrying(down, budget=3, sleep=slept.append)
    assert 3 <= sum(slept) < 3 + 5.0


def test_a_statement_error_is_not_retried():
    "a programming error (bad SQL) fails at once: waiting would not fix it"
    import pytest
    from sqlalchemy.exc import ProgrammingError

    from storage.db import retrying

    calls = []

    def bad():
        calls.append(1)
        raise ProgrammingError("SELEC 1", {}, Exception("syntax error"))

    with pytest.raises(ProgrammingError):
        retrying(bad, budget=10, sleep=lambda s: None)
    assert calls == [1]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrading_to_the_claimed_flag_marks_what_earlier_issues_claimed(kind, tmp_path):
    "0004 adds comparison.claimed: true for every comparison an issue holds, false for the rest"
    urls = iter([f"sqlite:///{tmp_path / 'old.db'}"]) if kind == "sqlite" else _postgres_database()
    for url in urls:
        upgrade(url, "0003")
        engine = make_engine(url)
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO comparison (id, slug, title, url, category, published_at, created_at, updated_at) "
                "VALUES (1, 'a', 'A', 'https://x.example/a', 'Writing', '2026-01-01', '2026-01-01', '2026-01-01'), "
                "(2, 'b', 'B', 'https://x.example/b', 'Writing', '2026-01-01', '2026-01-01', '2026-01-01')"))
            connection.execute(text("INSERT INTO issue (id, week, created_at) VALUES (1, '2026-W01', '2026-01-01')"))
            connection.execute(text("INSERT INTO issue_comparison (issue_id, comparison_id, rank) VALUES (1, 1, 0)"))
        upgrade(url)
        with engine.connect() as connection:
            flags = dict(connection.execute(text("SELECT id, claimed FROM comparison ORDER BY id")).all())
        engine.dispose()
        assert flags == {1: True, 2: False}


def a_sent_delivery_with_an_open(connection) -> None:
    """Issue 1 with segment 1, and delivery 7 of it sent to subscriber 1, with an open event."""
    connection.execute(text("INSERT INTO issue (id, week, created_at) VALUES (1, '2026-W01', '2026-01-01')"))
    connection.execute(text("INSERT INTO segment (id, issue_id, key, comparison_ids, audience, size) "
                            "VALUES (1, 1, 'k', '1', '', 1)"))
    connection.execute(text(
        "INSERT INTO subscriber (id, email, email_key, name, status, categories, created_at, updated_at) "
        "VALUES (1, 'a@example.com', 'a@example.com', 'A', 'active', '', '2026-01-01', '2026-01-01')"))
    connection.execute(text(
        "INSERT INTO delivery (id, issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, "
        "message_id, created_at) VALUES (7, 1, 1, 1, 'sent', 1, 0, 'm-7', '2026-01-01')"))
    connection.execute(text("INSERT INTO event (kind, occurred_at, source, delivery_id, machine, detail) "
                            "VALUES ('open', '2026-01-02', 'pixel', 7, false, '')"))


def the_sent_delivery_and_its_open_are_kept(engine) -> bool:
    with engine.connect() as connection:
        kept = connection.execute(text("SELECT id, issue_id, subscriber_id, segment_id, status, message_id "
                                       "FROM delivery")).all()
        linked = connection.execute(text("SELECT delivery_id FROM event")).scalars().all()
    return kept == [(7, 1, 1, 1, "sent", "m-7")] and linked == [7]


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_upgrading_the_delivery_table_keeps_its_rows_and_the_events_pointing_at_them(kind, tmp_path):
    "0005 rebuilds delivery's keys and indexes: rows and events survive, and the new keys hold both ways"
    urls = iter([f"sqlite:///{tmp_path / 'old.db'}"]) if kind == "sqlite" else _postgres_database()
    for url in urls:
        upgrade(url, "0004")
        engine = make_engine(url)
        with engine.begin() as connection:
            a_sent_delivery_with_an_open(connection)
            connection.execute(text("INSERT INTO issue (id, week, created_at) VALUES (2, '2026-W02', '2026-01-08')"))
            connection.execute(text("INSERT INTO segment (id, issue_id, key, comparison_ids, audience, size) "
                                    "VALUES (2, 2, 'k', '1', '', 0)"))
        upgrade(url, "0005")
        assert the_sent_delivery_and_its_open_are_kept(engine)
        insert = ("INSERT INTO delivery (issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, "
                  "created_at) VALUES (:issue, 1, :segment, 'pending', 0, 0, '2026-01-08')")
        with pytest.raises(IntegrityError), engine.begin() as connection:  # segment 1 is issue 1's, not 2's
            connection.execute(text(insert), {"issue": 2, "segment": 1})
        with pytest.raises(IntegrityError), engine.begin() as connection:  # one delivery per (issue, subscriber)
            connection.execute(text(insert), {"issue": 1, "segment": 1})
        with engine.begin() as connection:
            connection.execute(text(insert), {"issue": 2, "segment": 2})
        command.downgrade(alembic_config(url), "0004")  # and back: nothing lost either way
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM delivery")).scalar() == 2
        engine.dispose()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_delivery_without_foreign_keys_keeps_its_rows_and_one_delivery_per_subscriber_and_issue(kind, tmp_path):
    "0006 drops delivery's foreign keys: rows and events survive, the unique key holds, and the way back drops orphans"
    urls = iter([f"sqlite:///{tmp_path / 'old.db'}"]) if kind == "sqlite" else _postgres_database()
    for url in urls:
        upgrade(url, "0005")
        engine = make_engine(url)
        with engine.begin() as connection:
            a_sent_delivery_with_an_open(connection)
        upgrade(url)
        assert the_sent_delivery_and_its_open_are_kept(engine)
        insert = ("INSERT INTO delivery (issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, "
                  "created_at) VALUES (1, :subscriber, 1, 'pending', 0, 0, '2026-01-08')")
        with pytest.raises(IntegrityError), engine.begin() as connection:  # one delivery per (issue, subscriber)
            connection.execute(text(insert), {"subscriber": 1})
        with engine.begin() as connection:  # what a fan-out racing an erase can leave: the claim deletes it
            connection.execute(text(insert), {"subscriber": 2})
        command.downgrade(alembic_config(url), "0005")  # back: the orphan goes, the keys hold again
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id FROM delivery")).scalars().all() == [7]
        with pytest.raises(IntegrityError), engine.begin() as connection:
            connection.execute(text(insert), {"subscriber": 3})
        engine.dispose()


def test_a_batch_of_row_ids_goes_as_one_value_and_only_as_integers(engine):
    "the lease and the record pass a thousand ids as one array value: exactly those rows, and nothing but numbers"
    from storage.raw import Raw as _Raw

    with engine.begin() as connection:
        connection.execute(text("INSERT INTO issue (id, week, created_at) VALUES "
                                + ", ".join(f"({n}, '2026-W{n:02d}', '2026-01-01')" for n in range(1, 8))))
        raw = _Raw(connection)
        found = raw.fetch(f"SELECT id FROM issue WHERE id {raw.among('ids')} ORDER BY id", {"ids": raw.ids([6, 2, 4, 99])})
        assert [row[0] for row in found] == [2, 4, 6]
        assert raw.fetch(f"SELECT id FROM issue WHERE id {raw.among('ids')}", {"ids": raw.ids([])}) == []
        with pytest.raises(ValueError):
            raw.ids(["1}, {2"])


def test_a_time_written_on_the_cursor_is_the_time_the_orm_writes_and_reads_back(engine):
    "the pixel writer and the send loop store times on the driver's cursor: the same text (SQLite compares it as text) and the same instant as the ORM's, from any time zone"
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import bindparam, select
    from sqlmodel import Session

    from storage.models import Issue
    from storage.raw import Raw as _Raw

    paris = timezone(timedelta(hours=1))
    times = [datetime(2026, 1, 5, 9, 30, tzinfo=timezone.utc), datetime(2026, 1, 5, 10, 30, 0, 7, tzinfo=paris),
             datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc)]
    with Session(engine) as session:
        raw = _Raw(session)
        for n, moment in enumerate(times, start=1):
            session.add(Issue(id=n, week=f"2026-W{n:02d}", created_at=moment))
            raw.run("INSERT INTO issue (id, week, created_at) VALUES (:id, :week, :at)",
                    {"id": 10 + n, "week": f"2027-W{n:02d}", "at": raw.time(moment)})
        session.commit()
        stored = dict(session.connection().execute(text("SELECT id, created_at FROM issue")).all())
        for n, moment in enumerate(times, start=1):
            assert stored[10 + n] == stored[n]
            assert session.get(Issue, 10 + n).created_at == moment
        before = select(Issue.id).where(Issue.created_at < bindparam("at")).order_by(Issue.id)
        assert session.scalars(before, {"at": times[0]}).all() == [3, 13]
        with pytest.raises(ValueError, match="naive"):
            raw.time(datetime(2026, 1, 5, 9, 30))


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_links_sent_before_0007_keep_working_and_a_link_without_a_tag_names_no_row_stored_since(kind, tmp_path):
    "0007: a tagless link sent before it opens its subscriber's page and counts their open; for later rows it names nobody"
    from fastapi.testclient import TestClient
    from itsdangerous import URLSafeSerializer

    from digest.links import RECIPIENT_SALT
    from digest.web import create_app
    from tests.factories import RecordingTransport, add_subscribers, recipient_token
    from tests.fixtures_web import web_settings

    urls = iter([f"sqlite:///{tmp_path / 'old.db'}"]) if kind == "sqlite" else _postgres_database()
    for url in urls:
        upgrade(url, "0006")
        engine = make_engine(url)
        with engine.begin() as connection:
            a_sent_delivery_with_an_open(connection)  # subscriber 1, delivery 7
            connection.execute(text(
                "INSERT INTO subscriber (id, email, email_key, name, status, categories, created_at, updated_at) "
                "VALUES (2, 'b@example.com', 'b@example.com', 'B', 'active', '', '2026-01-01', '2026-01-01')"))
            if kind == "postgres":  # rows given their ids leave the sequence behind; signups would have moved it
                connection.execute(text("SELECT setval(pg_get_serial_sequence('subscriber', 'id'), 2)"))
        settings = web_settings(url)
        tagless = URLSafeSerializer(settings.secret_key, salt=RECIPIENT_SALT).dumps  # what was signed before 0007
        sent_before = {"digest": tagless([1, 7]), "welcome page": tagless([1, None])}
        upgrade(url)
        with engine.begin() as connection:  # the newest row at the upgrade leaves; its id goes to nobody else
            connection.execute(text("DELETE FROM subscriber WHERE id = 2"))
        later, = add_subscribers(engine, 1)
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO delivery (id, issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, "
                "created_at, sent_at) VALUES (8, 1, :later, 1, 'sent', 1, 0, '2026-01-01', '2026-01-01')"),
                {"later": later})
        app = create_app(settings, engine=engine, transport=RecordingTransport())
        agent = {"User-Agent": "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko)"}
        with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
            assert later > 2
            for name, token in sent_before.items():
                assert client.get(f"/p/{token}").status_code == 200, name
            assert client.get(f"/o/{sent_before['digest']}.gif", headers=agent).status_code == 200
            assert client.get(f"/p/{recipient_token(engine, app.state.ctx.signer, 1, 7)}").status_code == 200
            refused = {"a later row's": tagless([later, 8]), "a later row's, no delivery": tagless([later, None]),
                       "someone else's delivery": tagless([1, 8])}
            for name, token in refused.items():
                assert client.get(f"/p/{token}").status_code == 404, name
                assert client.get(f"/o/{token}.gif", headers=agent).status_code == 200, name
            client.portal.call(app.state.ctx.open_writer().settled)
        with engine.connect() as connection:
            opens = connection.execute(text("SELECT delivery_id, count(*) FROM event WHERE kind = 'open' "
                                            "GROUP BY delivery_id")).all()
        assert opens == [(7, 2)]  # the open seeded before the upgrade, and the one through the old link
        command.downgrade(alembic_config(url), "0006")  # and back: every row kept
        with engine.connect() as connection:
            assert connection.execute(text("SELECT id FROM subscriber ORDER BY id")).scalars().all() == [1, later]
        engine.dispose()
