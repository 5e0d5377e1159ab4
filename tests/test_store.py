from sqlalchemy import inspect, text

from storage.migrate import current


def test_upgrade_creates_every_table_and_records_the_revision(db_url, engine):
    "a fresh database upgraded by Alembic has every table the code uses"
    tables = set(inspect(engine).get_table_names())
    assert {"comparison", "tool", "review", "subscriber", "issue", "issue_comparison", "segment",
            "delivery", "event"} <= tables
    assert current(db_url) == "0001"


def test_sqlite_runs_in_wal_mode(sqlite_url):
    "SQLite runs in WAL mode so readers never wait for the sender"
    from storage.db import make_engine

    engine = make_engine(sqlite_url)
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()
