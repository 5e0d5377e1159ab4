import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
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
