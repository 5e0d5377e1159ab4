"""Names that look like web or email addresses are refused by every path that stores a name (digest.subscribers.names):
the rule itself, `digest subscribers add` and the CSV import. The signup form and JSON: test_signup_abuse.py."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from digest.importing import add_subscriber, import_subscribers
from digest.subscribers.names import link_in_name, name_problem
from storage.db import make_engine, session_scope
from storage.models import Subscriber

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)
REPO = Path(__file__).resolve().parents[1]

LINK_NAMES = [
    "Support: verify at https://evil.example/login", "evil.com", "Visit bit.ly/x", "www.evil", "WWW2.Evil",
    "support@evil.example", "Ada @ home", "mailto:x", "javascript:alert(1)", "hxxp://evil", "ftp:/x",
    "10.0.0.1", "ｅｖｉｌ．ｃｏｍ",  # full-width letters and dot
    "evil\u3002com", "evil.\u200bcom",  # an ideographic full stop; a zero-width space hiding the dot
    "x.xn--p1ai", "evil.москва", "St.John",
]
PLAIN_NAMES = ["Ada Lovelace", "J.R.R. Tolkien", "Martin Luther King Jr.", "Dr. No", "O'Brien", "Zoë 2.0",
               "Анна Смирнова", "李小龍", "Anne-Marie", "Ph.D.", "St. John", ""]


@pytest.mark.parametrize("name", LINK_NAMES)
def test_a_name_that_looks_like_a_web_or_email_address_is_refused_and_the_message_quotes_it(name):
    """each link-like name is refused, and the message names the word that looks like an address"""
    part = link_in_name(name)

    assert part
    assert f"found {part!r}" in name_problem(name) and "web or email address" in name_problem(name)


@pytest.mark.parametrize("name", PLAIN_NAMES)
def test_ordinary_names_initials_and_other_scripts_pass(name):
    """ordinary names, initials with dots, titles and non-Latin scripts are not mistaken for addresses"""
    assert link_in_name(name) is None and name_problem(name) is None


@pytest.fixture
def engine(sqlite_url):
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


def names(engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return {s.email_key: s.name for s in session.execute(select(Subscriber)).scalars()}


def test_add_subscriber_refuses_a_link_name_and_stores_nothing(engine):
    """add_subscriber (what `digest subscribers add` calls) refuses a URL name for a new and a known address"""
    add_subscriber(engine=engine, email="ada@example.com", name="Ada", now=NOW)

    for email in ("ada@example.com", "new@example.com"):
        with pytest.raises(ValueError, match="web or email address"):
            add_subscriber(engine=engine, email=email, name="Support: verify at https://evil.example", now=NOW)

    assert names(engine) == {"ada@example.com": "Ada"}


def test_the_cli_says_what_is_wrong_with_a_link_name(sqlite_url, tmp_path):
    """`digest subscribers add --name https://…` exits 1 with the reason, no traceback, and stores nothing"""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env["DIGEST_DATABASE_URL"] = sqlite_url

    done = subprocess.run([sys.executable, "-m", "digest", "subscribers", "add", "ada@example.com", "--name",
                           "Verify at www.evil.example"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120, check=False)

    assert done.returncode == 1, done.stdout + done.stderr
    assert "web or email address" in done.stdout + done.stderr and "Traceback" not in done.stderr
    engine = make_engine(sqlite_url)
    assert names(engine) == {}
    engine.dispose()


def test_the_csv_import_skips_a_row_whose_name_is_a_link_and_says_which(engine, tmp_path):
    """a CSV row with a URL name is a bad row (named by its line, with the reason); the other rows import"""
    path = tmp_path / "subscribers.csv"
    path.write_text("email,name\nada@example.com,Ada\neve@example.com,Claim your prize at evil.example\n"
                    "bob@example.com,Bob\n", encoding="utf-8")

    result = import_subscribers(engine=engine, path=path, now=NOW)

    assert names(engine) == {"ada@example.com": "Ada", "bob@example.com": "Bob"}
    [error] = result.errors
    assert error.line == 3 and "web or email address" in error.reason and "evil.example" in error.reason
