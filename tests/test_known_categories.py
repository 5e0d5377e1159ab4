"""A category no comparison uses is a typo: `subscribers add` and the CSV import refuse it with the closest match."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from digest.cli.main import cli
from digest.importing import add_subscriber, import_subscribers
from digest.importing.known_categories import KnownCategories, UnknownCategory
from storage.db import session_scope
from storage.models import Subscriber
from tests.factories import add_comparison

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
KNOWN = '"Data & Analytics", "Developer Tools", "Writing"'


@pytest.fixture
def published(engine):
    for category in ("Writing", "Developer Tools", "Data & Analytics", "developer tools", "AI; Agents"):
        add_comparison(engine, published_at=NOW - timedelta(days=1), category=category)
    return engine


def stored(engine) -> dict[str, str]:
    with session_scope(engine) as session:
        return dict(session.execute(select(Subscriber.email_key, Subscriber.categories)).all())


def test_a_typo_is_refused_with_the_closest_category_and_the_known_ones(published):
    "-c Writng: refused, naming Writing and every followable category; nothing stored"
    with pytest.raises(UnknownCategory) as caught:
        add_subscriber(engine=published, email="ada@example.com", categories=["Writng"], now=NOW)
    assert str(caught.value) == (f'category "Writng" is unknown (did you mean "Writing"?): the comparisons in the '
                                 f"store are filed under {KNOWN}")
    with pytest.raises(UnknownCategory, match=r'^category "Cooking" is unknown: the comparisons'):
        add_subscriber(engine=published, email="ada@example.com", categories=["Writing; Cooking"], now=NOW)
    assert stored(published) == {}


def test_known_categories_match_whatever_the_case_and_spacing(published):
    "WRITING and 'developer  tools' are the site's Writing and Developer Tools: accepted, stored canonical"
    result = add_subscriber(engine=published, email="ada@example.com", categories=["WRITING", "developer  tools"],
                            now=NOW)
    assert result.unchecked == ()
    assert stored(published) == {"ada@example.com": "developer tools;writing"}


def test_an_empty_store_accepts_categories_and_says_they_were_not_checked(engine):
    "no comparison yet: nothing to check against; the name is kept as written and reported unchecked"
    result = add_subscriber(engine=engine, email="ada@example.com", categories=["Writng"], now=NOW)
    assert result.unchecked == ("Writng",)
    assert stored(engine) == {"ada@example.com": "writng"}


def test_the_import_refuses_a_row_with_an_unknown_category_by_its_physical_line(published, tmp_path: Path):
    "a typo on the row starting at line 4 (a quoted name spans lines 2-3): that row is skipped, named by line 4"
    path = tmp_path / "list.csv"
    path.write_text('email,name,categories\nbo@example.com,"Bo\nBerg",Writing\ncy@example.com,Cy,Writing;Dev Tols\n'
                    "di@example.com,Di,\n", encoding="utf-8")
    result = import_subscribers(engine=published, path=path, now=NOW)
    assert (result.created, result.bad_rows, result.unchecked_categories) == (2, 1, [])
    [error] = result.errors
    assert (error.line, error.email) == (4, "cy@example.com")
    assert error.reason == (f'category "Dev Tols" is unknown (did you mean "Developer Tools"?): the comparisons '
                            f"in the store are filed under {KNOWN}")
    assert stored(published) == {"bo@example.com": "writing", "di@example.com": ""}


def test_an_import_into_an_empty_store_reports_the_unchecked_names(engine, tmp_path: Path):
    "no comparison yet: every row is imported and the names that could not be checked come back, once each"
    path = tmp_path / "list.csv"
    path.write_text("email,name,categories\na@example.com,A,Writng\nb@example.com,B,Writng;Security\n", encoding="utf-8")
    result = import_subscribers(engine=engine, path=path, now=NOW)
    assert (result.created, result.bad_rows, result.unchecked_categories) == (2, 0, ["Writng", "Security"])


def test_the_known_categories_are_the_followable_ones(published):
    "a legacy category with a ';' cannot be followed on its own, so it is not offered as known"
    with published.connect() as connection:
        known = KnownCategories.in_store(connection)
    assert sorted(known.names.values()) == ["Data & Analytics", "Developer Tools", "Writing"]


def test_the_cli_answers_a_typo_in_one_line(published, db_url, tmp_path: Path):
    "digest subscribers add -c Writng: the first line names the closest match, exit 1, no traceback"
    env = {"DIGEST_DATABASE_URL": db_url}
    done = CliRunner().invoke(cli, ["subscribers", "add", "ada@example.com", "-c", "Writng"], env=env)
    assert done.exit_code == 1, done.output
    assert done.stderr.splitlines()[0] == (f'error: category "Writng" is unknown (did you mean "Writing"?): the '
                                           f"comparisons in the store are filed under {KNOWN}")
    assert done.exception is None or isinstance(done.exception, SystemExit)
    path = tmp_path / "list.csv"
    path.write_text("email,name,categories\nbo@example.com,Bo,Writng\n", encoding="utf-8")
    done = CliRunner().invoke(cli, ["subscribers", "import", str(path)], env=env)
    assert done.exit_code == 0, done.output
    assert f"{path}: line 2: 'bo@example.com': category \"Writng\" is unknown (did you mean \"Writing\"?)" in done.stderr


def test_the_cli_warns_when_nothing_can_be_checked(db_url):
    "an empty store: the subscriber is added and a warning says the categories were stored unchecked"
    done = CliRunner().invoke(cli, ["subscribers", "add", "ada@example.com", "-c", "Writng"],
                              env={"DIGEST_DATABASE_URL": db_url})
    assert done.exit_code == 0, done.output
    assert done.stdout == "ada@example.com: added\n"
    assert done.stderr.startswith('warning: no comparison is in the store yet, so no category could be checked; '
                                  'stored as written: "Writng".')
