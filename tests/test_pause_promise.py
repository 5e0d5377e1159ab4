"""The pause promise, end to end on SQLite and PostgreSQL (issue 22, item 2): a reader who pauses from the
preference centre (reached from the link in their email) gets no issue while paused — the fan-out, the
editor's dry run and `digest stats` agree on who gets it — gets the first issue after the pause ends, and
gets the next issue again at once after "Resume now". The clock is passed in, never waited for.

The schedule is the default: Thursdays 09:00 UTC. 2026-12-03 is a Thursday (2026-W49).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

from digest.cli.main import cli
from digest.claim.opening import open_issue
from digest.claim.weeks import iso_week
from digest.editor.dry_run import dry_run
from digest.send.loop import Sender
from digest.services import build_services
from digest.transports.base import fill
from digest.web import create_app
from digest.weekly import run
from storage.db import make_engine
from storage.models import Delivery, Issue, Subscriber
from tests.factories import RecordingTransport, add_comparison, add_subscribers
from tests.fixtures_web import web_settings

SLOT = datetime(2026, 12, 3, 9, 0, tzinfo=timezone.utc)  # W49's slot
WEEK = timedelta(weeks=1)
HOUR = timedelta(hours=1)
PREFERENCES = re.compile(r"http://testserver(/p/[^\s\"<>]+)")


class Newsletter:
    """The scheduler's weekly run, the editor's dry run, `digest stats` and the subscriber web app over one
    database, at a clock the test moves."""

    def __init__(self, db_url: str):
        self.db_url = db_url
        self.now = SLOT - WEEK
        self.settings = web_settings(db_url)
        self.engine = make_engine(db_url)
        self.transport = RecordingTransport()
        self.services = build_services(self.settings, transport=self.transport, engine=self.engine,
                                       sleep=lambda seconds: None)
        self.sender = Sender(services=self.services, clock=lambda: self.now)
        app = create_app(self.settings, engine=self.engine, transport=RecordingTransport(), clock=lambda: self.now)
        self.client = TestClient(app, base_url="http://testserver", follow_redirects=False)
        self.ada, self.ben = add_subscribers(self.engine, 2, prefix="pause")
        (self.cy,) = add_subscribers(self.engine, 1, categories=["Security"], prefix="pause")

    def email(self, reader: int) -> str:
        with Session(self.engine) as session:
            return session.get(Subscriber, reader).email

    def dry_run(self, *, at: datetime, week: str | None = None) -> tuple[int, dict[str, int], list[str]]:
        """What the editor's dry run says at ``at`` of the issue of ``week`` (default: at's): recipients, who gets
        nothing by reason, and the addresses it names as paused."""
        self.now = at
        plan = dry_run(services=self.services, week=week, now=at, limit=None)
        paused = [person.email for person in plan.left_out if person.reason == "paused"]
        return plan.as_dict(tz=timezone.utc)["recipients"], plan.nothing, paused

    def publish(self, *, slot: datetime, category: str) -> None:
        """A comparison in ``category`` for the issue of ``slot``, published the day before."""
        add_comparison(self.engine, category=category, published_at=slot - timedelta(days=1))

    def issue(self, *, slot: datetime) -> tuple[str, int, list[str]]:
        """The scheduler's tick just after ``slot``: the week, the fan-out's count, and the addresses the issue's
        email went to."""
        self.now = slot + timedelta(minutes=5)
        before = len(self.transport.batches)
        result = run(services=self.services, sender=self.sender, now=self.now)
        assert result.opened is not None and result.opened.created, result.reason
        sent_to = [person.email for batch in self.transport.batches[before:] for person in batch.recipients]
        return result.week, result.opened.deliveries, sent_to

    def fanned_out_to(self, week: str) -> set[int]:
        with Session(self.engine) as session:
            return set(session.execute(select(Delivery.subscriber_id).join(Issue, Issue.id == Delivery.issue_id)
                                       .where(Issue.week == week)).scalars())

    def stats_recipients(self, week: str) -> tuple[int, int]:
        """The issue's recipients as `digest stats --json` and the table's "recipients" row say."""
        env = {"DIGEST_DATABASE_URL": self.db_url}
        as_json = CliRunner().invoke(cli, ["stats", "--week", week, "--json"], env=env)
        assert as_json.exit_code == 0, as_json.output
        [row] = json.loads(as_json.output)["issues"]
        table = CliRunner().invoke(cli, ["stats", "--week", week], env=env, terminal_width=200)
        assert table.exit_code == 0, table.output
        [line] = [line for line in table.output.splitlines() if re.match(r"\W*recipients\b", line)]
        return row["recipients"], int(re.findall(r"\d+", line)[-1])

    def preferences_link(self, reader: int) -> str:
        """The preference centre's path, from the last email ``reader`` was sent (its text part, filled)."""
        address = self.email(reader)
        batch, person = [(batch, person) for batch in self.transport.batches for person in batch.recipients
                         if person.email == address][-1]
        return PREFERENCES.search(fill(batch.text, person.substitutions)).group(1)

    def press(self, path: str, action: str, *, at: datetime, **fields) -> str:
        """At ``at``, press the button of form ``action`` on the page at ``path`` as a browser would; the page
        it leads to."""
        self.now = at
        page = self.client.get(path)
        assert page.status_code == 200, page.text
        form = re.search(r'<form method="post" action="([^"]+)">\s*<input type="hidden" name="csrf" '
                         rf'value="([0-9a-f]{{64}})">\s*<input type="hidden" name="action" value="{action}">',
                         page.text)
        assert form, f"no {action!r} form on {path}"
        answer = self.client.post(form.group(1), data={"action": action, "csrf": form.group(2), **fields})
        assert answer.status_code == 303, answer.text
        return self.client.get(answer.headers["location"]).text

    def paused_until(self, reader: int) -> datetime | None:
        with Session(self.engine) as session:
            return session.get(Subscriber, reader).paused_until

    def close(self) -> None:
        self.client.close()
        self.engine.dispose()


@pytest.fixture
def newsletter(db_url):
    made = Newsletter(db_url)
    yield made
    made.close()


class Sent(NamedTuple):
    week: str
    to: list[str]  # the addresses the issue's email went to, sorted
    nothing: dict[str, int]  # who the dry run said gets nothing, by reason
    paused: list[str]  # the addresses the dry run named as paused, sorted


def agreed(newsletter: Newsletter, *, slot: datetime, categories=("Developer Tools",)) -> Sent:
    """A comparison in each of ``categories``, then the dry run an hour before the slot, the scheduler's issue at
    it, and `digest stats` after it: all three count the same readers."""
    for category in categories:
        newsletter.publish(slot=slot, category=category)
    recipients, nothing, paused = newsletter.dry_run(at=slot - HOUR)
    week, fanned, sent_to = newsletter.issue(slot=slot)
    assert week == iso_week(slot)
    assert recipients == fanned == len(sent_to) == len(newsletter.fanned_out_to(week))
    assert newsletter.stats_recipients(week) == (fanned, fanned)
    return Sent(week, sorted(sent_to), nothing, sorted(paused))


def test_a_reader_who_pauses_gets_no_issue_until_the_pause_ends_then_the_first_one_after(newsletter):
    "Ada pauses for a week from the link in W49's email: W50 goes to Ben alone, by every count; W51 to both again"
    # Cy follows Security only and pauses too: the dry run must name him once, as paused, not also as unmatched.
    ada, ben, cy = (newsletter.email(reader) for reader in (newsletter.ada, newsletter.ben, newsletter.cy))
    first = agreed(newsletter, slot=SLOT, categories=("Developer Tools", "Security"))
    assert first.to == sorted([ada, ben, cy])

    paused_at = SLOT + HOUR  # they read it, and take a break: Cy (who follows Security only) for longer
    page = newsletter.press(newsletter.preferences_link(newsletter.ada), "pause", at=paused_at, weeks="1")
    newsletter.press(newsletter.preferences_link(newsletter.cy), "pause", at=paused_at, weeks="2")
    assert newsletter.paused_until(newsletter.ada) == paused_at + WEEK
    assert "Paused. You will get no email until the date shown below." in page
    assert "Paused until <strong>10 December 2026</strong>" in page and ">Resume now</button>" in page

    paused = agreed(newsletter, slot=SLOT + WEEK)
    assert (paused.to, paused.nothing, paused.paused) == ([ben], {"paused": 2}, sorted([ada, cy]))
    assert newsletter.fanned_out_to(paused.week) == {newsletter.ben}

    # Her pause ends at 10:00 on 10 December, an hour after W50 went out: W51's dry run sees her back from then.
    w51 = iso_week(SLOT + 2 * WEEK)
    second_before = paused_at + WEEK - timedelta(seconds=1)
    assert newsletter.dry_run(at=second_before, week=w51)[1:] == ({"paused": 2}, sorted([ada, cy]))
    assert newsletter.dry_run(at=paused_at + WEEK, week=w51)[1:] == ({"paused": 1}, [cy])

    back = agreed(newsletter, slot=SLOT + 2 * WEEK)
    assert (back.week, back.to, back.nothing, back.paused) == (w51, sorted([ada, ben]), {"paused": 1}, [cy])
    assert newsletter.fanned_out_to(back.week) == {newsletter.ada, newsletter.ben}


def test_resume_now_brings_the_next_issue_back(newsletter):
    "Ada pauses for 8 weeks, then presses Resume now the next Monday: W50 goes to her, by every count"
    ada, ben = newsletter.email(newsletter.ada), newsletter.email(newsletter.ben)
    agreed(newsletter, slot=SLOT)
    link = newsletter.preferences_link(newsletter.ada)
    newsletter.press(link, "pause", at=SLOT + HOUR, weeks="8")
    monday = SLOT + 4 * 24 * HOUR
    assert newsletter.dry_run(at=monday)[1:] == ({"paused": 1}, [ada])

    page = newsletter.press(link, "resume", at=monday)
    assert newsletter.paused_until(newsletter.ada) is None
    assert "Resumed. You will get the next issue." in page and "Paused until" not in page
    assert newsletter.dry_run(at=monday)[1:] == ({}, [])

    resumed = agreed(newsletter, slot=SLOT + WEEK)
    assert (resumed.to, resumed.nothing, resumed.paused) == (sorted([ada, ben]), {"no matching category": 1}, [])
    assert newsletter.fanned_out_to(resumed.week) == {newsletter.ada, newsletter.ben}


def test_a_pause_taken_while_the_issue_is_sending_stops_the_rest_of_it(newsletter):
    "W50 opens with Ada in it; she pauses from W49's link before her batch goes: the email is not sent to her"
    agreed(newsletter, slot=SLOT)
    newsletter.publish(slot=SLOT + WEEK, category="Developer Tools")
    opened = open_issue(engine=newsletter.engine, week=iso_week(SLOT + WEEK), now=SLOT + WEEK)
    newsletter.press(newsletter.preferences_link(newsletter.ada), "pause", at=SLOT + WEEK + HOUR, weeks="4")
    before = len(newsletter.transport.batches)

    newsletter.sender.send_issue(opened.issue)

    sent_to = [person.email for batch in newsletter.transport.batches[before:] for person in batch.recipients]
    assert sent_to == [newsletter.email(newsletter.ben)]
