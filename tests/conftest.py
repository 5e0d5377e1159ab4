"""Shared fixtures: a real SQLite file and a real PostgreSQL database per test.

PostgreSQL comes from DIGEST_TEST_POSTGRES_URL (default: the local server with trust auth). A test that
needs it fails loudly when it is missing: CI (.ci/run) starts the server, and a skipped test would hide
a missing part.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from storage.db import make_engine
from storage.migrate import upgrade

pytest_plugins = ["tests.fixtures_sendgrid", "tests.fixtures_web"]

POSTGRES_ADMIN_URL = os.environ.get(
    "DIGEST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _postgres_database() -> Iterator[str]:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"digest_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 — turned into a clear failure below
        admin.dispose()
        pytest.fail(
            f"PostgreSQL is needed for this test and is not reachable at {POSTGRES_ADMIN_URL}: {exc}. "
            "Start it (bash .ci/run does) or set DIGEST_TEST_POSTGRES_URL.",
            pytrace=False,
        )
    try:
        yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory) -> Path:
    """One SQLite file migrated to the newest revision, which each test copies: migrating a file per test cost
    0.25-0.3 s a test (a mutation run pays that for every test of every mutant). Tests of the migrations
    themselves migrate their own files."""
    path = tmp_path_factory.mktemp("migrated") / "digest.db"
    upgrade(f"sqlite:///{path}")
    assert not path.with_name("digest.db-wal").exists()  # every page is in the file: a copy is the whole database
    return path


def _fresh_sqlite(tmp_path: Path, migrated: Path) -> str:
    target = tmp_path / "digest.db"
    shutil.copyfile(migrated, target)
    return f"sqlite:///{target}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path, migrated_sqlite) -> Iterator[str]:
    """An empty, migrated database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        yield _fresh_sqlite(tmp_path, migrated_sqlite)
    else:
        for url in _postgres_database():
            upgrade(url)
            yield url


@pytest.fixture
def sqlite_url(tmp_path, migrated_sqlite) -> str:
    return _fresh_sqlite(tmp_path, migrated_sqlite)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    for url in _postgres_database():
        upgrade(url)
        yield url


@pytest.fixture
def engine(db_url) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()
