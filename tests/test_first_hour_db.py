"""A newcomer's database (issue 14, items 3 and 4): no database, an old one, a wrong URL — each gets one
line on stderr and exit 2 at once, from every entry point; the embedded SQLite default just works.

The commands run as people run them, as subprocesses in a fresh directory. "At once" is checked two ways:
the process ends within START_SECONDS (a patient retry waits 0.2 + 0.4 + … s and up to 120 s) and says
nothing of retrying.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from storage.db import in_transaction, make_engine
from storage.migrate import current, head, upgrade
from tests.conftest import _postgres_database
from tests.postgres_refuser import PasswordRefuser

REPO = Path(__file__).resolve().parents[1]
SECRET = "a-test-secret-key-that-is-long-enough"
# A process start with its imports takes ~1 s here; 8 s is generous on a loaded machine and still far
# below what one round of retries costs (0.2 + 0.4 + 0.8 + 1.6 + 3.2 = 6.2 s) or the 120 s budget.
START_SECONDS = 8.0
UPGRADE = "run `digest db upgrade`"


def run(*args: str, cwd: Path, url: str | None = None, script: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env.update(PYTHONPATH=str(REPO), DIGEST_SECRET_KEY=SECRET)  # this checkout, whatever is installed
    if url is not None:
        env["DIGEST_DATABASE_URL"] = url
    command = [str(REPO / "scheduler.py")] if script else ["-m", "digest"]
    started = time.monotonic()
    done = subprocess.run([sys.executable, *command, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    done.seconds = time.monotonic() - started
    return done


def first_line(done: subprocess.CompletedProcess) -> str:
    return (done.stderr.splitlines() or [""])[0]


def assert_one_line(done: subprocess.CompletedProcess, line: str, *, hidden: str = "") -> None:
    output = done.stdout + done.stderr
    assert (first_line(done), done.returncode) == (line, 2), output
    assert "Traceback" not in output and "retrying" not in output, output
    assert done.seconds < START_SECONDS, f"{done.seconds:.1f} s: {output}"
    if hidden:
        assert hidden not in output


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Every entry point that opens the store, as a newcomer types it.
ENTRY_POINTS = {
    "stats": (("stats",), False),
    "send --dry-run": (("send", "--dry-run"), False),
    "preview": (("preview", "--format", "subject"), False),
    "subscribers add": (("subscribers", "add", "ada@example.com"), False),
    "worker --once": (("worker", "--once"), False),
    "scheduler.py --once": (("--once",), True),
}


# -- SQLite: the embedded default ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["send --dry-run", "stats", "scheduler.py --once", "worker --once"])
def test_a_fresh_directory_gets_a_migrated_sqlite_database_and_says_so_in_one_line(name, tmp_path):
    "no digest.db yet: the command creates it at the latest revision, says so in one line, and does its work"
    args, script = ENTRY_POINTS[name]
    done = run(*args, cwd=tmp_path, script=script)
    assert done.returncode == 0, done.stderr
    assert first_line(done) == f"created the database sqlite:///digest.db (SQLite) at revision {head()}"
    assert "Traceback" not in done.stdout + done.stderr
    assert current(f"sqlite:///{tmp_path / 'digest.db'}") == head()


def test_an_empty_sqlite_file_left_by_an_older_version_is_brought_up_to_date(tmp_path):
    "the empty digest.db today's code leaves behind: the next command creates the tables instead of failing"
    make_engine(f"sqlite:///{tmp_path / 'digest.db'}").connect().close()  # a file with a header, no tables
    done = run("stats", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "no issues yet"), done.stderr
    assert first_line(done) == f"database at sqlite:///digest.db: upgraded from empty to revision {head()}"


@pytest.mark.parametrize("name", list(ENTRY_POINTS))
def test_an_sqlite_database_older_than_the_code_is_one_line_naming_the_upgrade(name, tmp_path):
    "SQLite at revision 0005: every entry point says so in one line naming `digest db upgrade`, exit 2, at once"
    upgrade(f"sqlite:///{tmp_path / 'digest.db'}", "0005")
    args, script = ENTRY_POINTS[name]
    done = run(*args, cwd=tmp_path, script=script)
    assert_one_line(done, f"error: the database at sqlite:///digest.db is at revision 0005, this code needs "
                          f"{head()}: {UPGRADE}")
    assert current(f"sqlite:///{tmp_path / 'digest.db'}") == "0005", "nothing was changed"


def test_digest_db_upgrade_then_brings_it_up_to_date_and_the_command_works(tmp_path):
    "the command the line names does what it says: 0005 → head, then `digest stats` answers"
    upgrade(f"sqlite:///{tmp_path / 'digest.db'}", "0005")
    done = run("db", "upgrade", cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (
        0, f"database at sqlite:///digest.db: upgraded from 0005 to revision {head()}"), done.stderr
    again = run("db", "upgrade", cwd=tmp_path)
    assert again.stdout.strip() == f"database at sqlite:///digest.db: at revision {head()}, nothing to do"
    assert run("stats", cwd=tmp_path).stdout.strip() == "no issues yet"


def test_a_database_newer_than_the_code_is_one_line(tmp_path):
    "a database upgraded by a newer version: one line, exit 2, and `digest db upgrade` does not touch it"
    url = f"sqlite:///{tmp_path / 'digest.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    line = (f"error: the database at sqlite:///digest.db is at revision 0099, newer than this code (it needs "
            f"{head()}): run the newer version of digest, or restore a backup")
    assert_one_line(run("send", "--dry-run", cwd=tmp_path), line)
    assert_one_line(run("db", "upgrade", cwd=tmp_path), line)


def test_a_file_that_is_not_a_digest_database_is_one_line(tmp_path):
    "DIGEST_DATABASE_URL pointing at some other application's SQLite file, or at a text file: one line each"
    other = create_engine(f"sqlite:///{tmp_path / 'other.db'}")
    with other.begin() as connection:
        connection.execute(text("CREATE TABLE notes (body TEXT)"))
    other.dispose()
    (tmp_path / "notes.txt").write_text("not a database\n" * 500)
    assert_one_line(run("stats", cwd=tmp_path, url="sqlite:///other.db"),
                    "error: the database at sqlite:///other.db has tables but no schema revision: it is not a "
                    "digest database; point DIGEST_DATABASE_URL at the right one")
    assert_one_line(run("stats", cwd=tmp_path, url="sqlite:///notes.txt"),
                    "error: cannot use the database at sqlite:///notes.txt: the file is not an SQLite database")
    assert_one_line(run("stats", cwd=tmp_path, url="sqlite:///no/such/folder/digest.db"),
                    "error: cannot use the database at sqlite:///no/such/folder/digest.db: cannot open the file: "
                    "does its folder exist, and may this user write there?")


# -- PostgreSQL ---------------------------------------------------------------------------------------

@pytest.fixture
def empty_postgres():
    yield from _postgres_database()


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["stats", "send --dry-run", "worker --once", "scheduler.py --once"])
def test_an_empty_postgresql_database_is_one_line_naming_the_upgrade(name, empty_postgres, tmp_path):
    "PostgreSQL is never created behind anyone's back: an empty database names `digest db upgrade`, exit 2"
    args, script = ENTRY_POINTS[name]
    done = run(*args, cwd=tmp_path, url=empty_postgres, script=script)
    assert_one_line(done, f"error: the database at {empty_postgres} is empty: {UPGRADE} to create the tables")
    assert current(empty_postgres) is None


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["send --dry-run", "serve", "scheduler.py --once"])
def test_a_postgresql_database_older_than_the_code_is_one_line_until_upgraded(name, empty_postgres, tmp_path):
    "PostgreSQL at 0005: one line naming `digest db upgrade` (serve refuses to start); after the upgrade it works"
    upgrade(empty_postgres, "0005")
    args, script = (("serve", "--port", str(free_port())), False) if name == "serve" else ENTRY_POINTS[name]
    done = run(*args, cwd=tmp_path, url=empty_postgres, script=script)
    assert_one_line(done, f"error: the database at {empty_postgres} is at revision 0005, this code needs "
                          f"{head()}: {UPGRADE}")
    upgraded = run("db", "upgrade", cwd=tmp_path, url=empty_postgres)
    assert upgraded.stdout.strip() == f"database at {empty_postgres}: upgraded from 0005 to revision {head()}"
    if name != "serve":
        assert run(*args, cwd=tmp_path, url=empty_postgres, script=script).returncode == 0


# -- a wrong DIGEST_DATABASE_URL ------------------------------------------------------------------------

def wrong_urls(port_refused: int, port_refuser: int) -> dict[str, tuple[str, str]]:
    """Each kind of wrong URL: (the URL, the cause the line gives after "cannot use the database at …: ")."""
    pg = "postgresql+psycopg"
    return {
        "refused": (f"{pg}://digest:hunter2@127.0.0.1:{port_refused}/digest",
                    "connection refused: is the server running and listening on that host and port?"),
        "unknown database": (f"{pg}://postgres:hunter2@127.0.0.1:5432/digest_no_such_database",
                             'database "digest_no_such_database" does not exist: create it (createdb '
                             'digest_no_such_database) or correct the name'),
        "wrong password": (f"{pg}://digest:hunter2@127.0.0.1:{port_refuser}/digest",
                           'password authentication failed for user "digest": check the user and password'),
        "unknown driver": ("nosuchdriver://digest:hunter2@db/digest",
                           "no SQLAlchemy dialect or driver 'nosuchdriver' is installed: use sqlite:///FILE or "
                           "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"),
        "unknown postgresql driver": ("postgresql+nosuchdriver://digest:hunter2@db/digest",
                                      "no SQLAlchemy dialect or driver 'postgresql+nosuchdriver' is installed: use "
                                      "sqlite:///FILE or postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"),
        "garbage": ("digest:hunter2@db", "not a database URL: expected sqlite:///FILE or "
                                         "postgresql+psycopg://USER:PASSWORD@HOST/DATABASE"),
    }


KINDS = list(wrong_urls(0, 0))


@pytest.mark.postgres
@pytest.mark.parametrize("kind", KINDS)
def test_a_wrong_database_url_is_one_line_naming_it_without_its_password(kind, tmp_path):
    "refused, unknown database, wrong password, unknown driver, garbage: `digest send` gives one line, at once"
    with PasswordRefuser() as port_refuser:
        url, reason = wrong_urls(free_port(), port_refuser)[kind]
        done = run("send", cwd=tmp_path, url=url)
    shown = url.replace(":hunter2@", ":***@")
    assert_one_line(done, f"error: cannot use the database at {shown}: {reason}", hidden="hunter2")
    assert not (tmp_path / "digest.db").exists()


@pytest.mark.parametrize("name", [*ENTRY_POINTS, "serve"])
def test_every_entry_point_refuses_a_wrong_password_in_one_line(name, tmp_path):
    "a refused password: every command that opens the store, the scheduler and `digest serve` say so in one line"
    args, script = (("serve", "--port", str(free_port())), False) if name == "serve" else ENTRY_POINTS[name]
    with PasswordRefuser() as port_refuser:
        url, reason = wrong_urls(free_port(), port_refuser)["wrong password"]
        done = run(*args, cwd=tmp_path, url=url, script=script)
    shown = url.replace(":hunter2@", ":***@")
    assert_one_line(done, f"error: cannot use the database at {shown}: {reason}", hidden="hunter2")


# -- what a send retries ----------------------------------------------------------------------------------

@pytest.mark.postgres
def test_a_send_waits_out_a_refused_connection_but_never_a_permanent_error(tmp_path):
    "a send's transaction waits out a refused connection; a missing table, database or password fails at once"
    slept: list[float] = []

    def attempts(url: str) -> list[float]:
        slept.clear()
        engine = make_engine(url)
        try:
            with pytest.raises(OperationalError):
                in_transaction(engine, lambda session: session.execute(text("SELECT id FROM issue")).all(),
                               budget=3.0, sleep=slept.append)
        finally:
            engine.dispose()
        return list(slept)

    with PasswordRefuser() as port_refuser:
        urls = wrong_urls(free_port(), port_refuser)
        assert 3.0 <= sum(attempts(urls["refused"][0])) < 3.0 + 5.0, "transient: waited out to the budget"
        assert attempts(urls["unknown database"][0]) == []
        assert attempts(urls["wrong password"][0]) == []
    assert attempts(f"sqlite:///{tmp_path / 'empty.db'}") == [], "no such table: waiting cannot create it"
