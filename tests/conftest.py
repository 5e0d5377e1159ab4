"""Shared fixtures: a real SQLite file and a real PostgreSQL database per test.

PostgreSQL comes from DIGEST_TEST_POSTGRES_URL (default: the local server with trust auth). A test that
needs it fails loudly when it is missing: CI (.ci/run) starts the server, and a skipped test would hide
a missing part.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> Iterator[str]:
    """An empty, migrated database: once on SQLite, once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'digest.db'}"
        upgrade(url)
        yield url
    else:
        for url in _postgres_database():
            upgrade(url)
            yield url


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'digest.db'}"
    upgrade(url)
    return url


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
