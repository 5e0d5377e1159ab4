"""Alembic, driven from code: `digest db upgrade` and the tests call `upgrade(url)`; every entry point calls
`ready(url)` before it opens the store.

`ready` is the one check of a database before use. The embedded default just works: an SQLite file that
is missing or has no tables yet is created and brought to the latest schema. Anything else that would fail
later with a traceback — a URL that names no database, a server that refuses, a password it does not take,
a database that is empty or at a revision other than this code's — raises `StoreUnusable`, one line that
names the URL (password hidden), what is wrong and what to do. Nothing here waits: the connection errors
it meets are reported the moment the driver gives them.

An SQLite file at an older revision is not upgraded behind anyone's back, though creating one is: it holds
someone's subscribers, an upgrade is one-way (the previous version then refuses the file, so rolling
back the code means restoring a copy) and some migrations rebuild whole tables under the write lock while
a send waits. The line names the one command that does it, `digest db upgrade`.
"""

from __future__ import annotations

import logging
from pathlib import Path

# Alembic is imported where it is used: a URL that does not connect is answered without it (0.2 s of imports).
MIGRATIONS = Path(__file__).parent / "migrations"
UPGRADE = "run `digest db upgrade`"
VERSION_TABLE = "alembic_version"  # where Alembic records the revision (its default name)


class StoreUnusable(Exception):
    """The database cannot be used as it is; the message is one line that says why and what to do."""


def alembic_config(url: str):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def head() -> str:
    """The newest revision. Each migration file is named after its revision, numbered in order, each
    following the one before (tests/test_store.py holds this to Alembic's own reading): the names say it
    without Alembic, whose script directory costs every command 0.2 s of imports."""
    return max(path.name.split("_", 1)[0] for path in (MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def current(url: str) -> str | None:
    return _inspect(url)[0]


def ready(url: str, *, upgrading: bool = False) -> str | None:
    """Check that this code can use the database at ``url``; raise `StoreUnusable` when it cannot.

    Returns a line to tell the person when something was done (an SQLite file created), else None.
    With ``upgrading`` (`digest db upgrade`), a database that is empty or older is fine: it is upgraded.
    """
    quiet = logging.getLogger("alembic")  # one line says what was done, not two lines per migration
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        return _ready(url, upgrading=upgrading)
    finally:
        quiet.setLevel(level)


def _ready(url: str, *, upgrading: bool) -> str | None:
    from storage.faults import shown_url

    shown = shown_url(url)
    missing = _is_sqlite(url) and not _sqlite_file_exists(url)
    revision, empty = _inspect(url)
    needed = head()
    if revision == needed:
        return None
    if revision is None and not empty:
        raise StoreUnusable(f"the database at {shown} has tables but no schema revision: it is not a digest "
                            "database; point DIGEST_DATABASE_URL at the right one")
    known = [script.revision for script in _scripts().walk_revisions()]
    if revision is not None and revision not in known:
        raise StoreUnusable(f"the database at {shown} is at revision {revision}, newer than this code (it "
                            f"needs {needed}): run the newer version of digest, or restore a backup")
    if upgrading or (empty and _is_sqlite(url)):
        # A missing SQLite file was made by the connection that looked; no tables: nothing to lose.
        _upgrade(url, shown)
        if missing:
            return f"created the database {shown} (SQLite) at revision {needed}"
        return f"database at {shown}: upgraded from {revision or 'empty'} to revision {needed}"
    if empty:
        raise StoreUnusable(f"the database at {shown} is empty: {UPGRADE} to create the tables")
    raise StoreUnusable(f"the database at {shown} is at revision {revision}, this code needs {needed}: {UPGRADE}")


def _inspect(url: str) -> tuple[str | None, bool]:
    """(the revision Alembic recorded, whether the database has no tables at all)."""
    from sqlalchemy import inspect, text

    from storage.db import make_engine

    engine = _opened(lambda: make_engine(url, **_connect_args(url)), url)
    try:
        connection = _opened(engine.connect, url)
        with connection:
            tables = inspect(connection).get_table_names()
            # Alembic's version table, read as Alembic reads it (one row: this schema has one line of
            # revisions), without loading Alembic.
            revision = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() \
                if VERSION_TABLE in tables else None
            return revision, not tables
    finally:
        engine.dispose()


def _scripts():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def _opened(open_it, url: str):
    """``open_it()``, with what the driver said turned into one line that names the URL."""
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

    from storage.faults import cause, shown_url

    try:
        return open_it()
    except (ArgumentError, NoSuchModuleError, ModuleNotFoundError, DBAPIError) as exc:
        raise StoreUnusable(f"cannot use the database at {shown_url(url)}: {cause(exc)}") from None


def _upgrade(url: str, shown: str) -> None:
    from sqlalchemy.exc import DBAPIError

    from storage.faults import cause

    try:
        upgrade(url)
    except DBAPIError as exc:
        raise StoreUnusable(f"cannot upgrade the database at {shown}: {cause(exc)}") from None


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def _sqlite_file_exists(url: str) -> bool:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        name = make_url(url).database
    except ArgumentError:  # _inspect says what is wrong with it
        return True
    return not name or name == ":memory:" or Path(name).exists()


def _connect_args(url: str) -> dict:
    # 10 s to open a PostgreSQL connection (libpq waits forever by default): a host that drops packets
    # is reported, not waited on. A URL that sets connect_timeout keeps its own.
    if _is_sqlite(url) or "connect_timeout" in url:
        return {}
    return {"connect_args": {"connect_timeout": 10}}
