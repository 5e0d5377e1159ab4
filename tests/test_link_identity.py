"""A deleted subscriber's links act for nobody: not for whoever signs up next, not after a restored backup
hands their id out again. Driven through the web app and the weekly send, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import text

from tests.factories import build_sender
from digest.links import TOKEN_TAG
from digest.claim.weeks import iso_week
from digest.weekly import run
from tests.factories import RecordingTransport, add_comparison
from tests.fixtures_signup import sent, web  # noqa: F401 — fixtures: signup emails sent as in production
from tests.fixtures_web import web_settings

TOKEN = r"([A-Za-z0-9_\-.]+)"
CONFIRM, CLICK, PREFERENCES = (re.compile(p + TOKEN) for p in ("/confirm/", "/c/", 'href="/p/'))
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
HUMAN_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
TABLES = ("subscriber", "delivery", "event", "suppression", "vote", "vote_event")  # what any link could change


@dataclass
class Links:
    """Every link one person was sent: the confirmation, the page after it, and one digest's."""

    confirm: str
    welcome_preferences: str  # the /p/ link on the "you are confirmed" page (no delivery in it)
    recipient: str  # the digest's token: pixel, click, /u/ and /p/
    click: str  # a click link token of the digest


class Story:
    """The web app and a sender over one database: people sign up, confirm, get an issue, leave."""

    def __init__(self, web, sent, db_url: str):
        self.web = web
        self.sent = sent  # the signup mailer's emails (tests.fixtures_signup)
        self.engine = web.app.state.ctx.engine
        self.sender = build_sender(web_settings(db_url), transport=RecordingTransport(), sleep=lambda s: None)
        self.now = datetime.now(timezone.utc)

    def subscribe(self, email: str) -> int:
        """Sign up at the form; once the signup mailer has stored the row and sent its email: the row's id."""
        assert self.web.post("/subscribe", json={"email": email}).is_success
        assert self.sent.to(email)  # waits until the mailer is idle
        return self.id_of(email)

    def confirm(self, email: str) -> tuple[int, str, str]:
        """(subscriber id, confirm token, the confirmed page's preferences token), from the last email to EMAIL."""
        token = CONFIRM.search(self.sent.to(email)[-1].text).group(1)
        done = self.web.post(f"/confirm/{token}")
        assert done.status_code == 200, done.text
        return self.id_of(email), token, PREFERENCES.search(done.text).group(1)

    def send_issue(self, email: str) -> tuple[int, str, str]:
        """A new comparison, the next week's issue sent: (delivery id, recipient token, click token) of EMAIL."""
        add_comparison(self.engine, published_at=self.now - timedelta(hours=1))
        transport = self.sender.services.transport
        transport.batches.clear()
        run(services=self.sender.services, sender=self.sender, now=self.now, week=iso_week(self.now))
        self.now += timedelta(days=7)
        [batch] = transport.batches
        [person] = [r for r in batch.recipients if r.email == email]
        return person.delivery_id, person.substitutions[TOKEN_TAG], CLICK.search(batch.html).group(1)

    def id_of(self, email: str) -> int:
        with self.engine.connect() as connection:
            return connection.execute(text("SELECT id FROM subscriber WHERE email_key = :e"), {"e": email}).scalar_one()

    def rows(self) -> dict[str, list[tuple]]:
        with self.engine.connect() as connection:
            return {table: connection.execute(text(f"SELECT * FROM {table} ORDER BY id")).all() for table in TABLES}

    def close(self) -> None:
        self.sender.services.engine.dispose()


def answers(web, links: Links) -> dict[str, tuple]:
    """What each of a person's links answers, as (status, body, redirect), in every way a link can be used."""
    web.cookies.clear()
    calls = {
        "pixel": lambda: web.get(f"/o/{links.recipient}.gif", headers={"User-Agent": HUMAN_UA}),
        "click": lambda: web.get(f"/c/{links.click}?r={links.recipient}", headers={"User-Agent": HUMAN_UA}),
        "GET /u": lambda: web.get(f"/u/{links.recipient}"),
        "POST /u one-click": lambda: web.post(f"/u/{links.recipient}", data={"List-Unsubscribe": "One-Click"}),
        "POST /u form": lambda: web.post(f"/u/{links.recipient}", data={"action": "unsubscribe"}),
        "GET /p": lambda: web.get(f"/p/{links.recipient}"),
        "POST /p export": lambda: web.post(f"/p/{links.recipient}", data={"action": "export"}),
        "POST /p delete": lambda: web.post(f"/p/{links.recipient}", data={"action": "delete", "confirm": "yes"}),
        "GET /p (welcome page)": lambda: web.get(f"/p/{links.welcome_preferences}"),
        "POST /p resubscribe (welcome page)": lambda: web.post(f"/p/{links.welcome_preferences}",
                                                                data={"action": "resubscribe"}),
        "GET /confirm": lambda: web.get(f"/confirm/{links.confirm}"),
        "POST /v vote": lambda: web.post(f"/v/{links.recipient}/{carried_slug(web)}/1/ship", data={"vote": "ship"}),
        "POST /confirm": lambda: web.post(f"/confirm/{links.confirm}"),
    }
    result = {}
    for name, call in calls.items():
        response = call()
        result[name] = (response.status_code, response.content, response.headers.get("location"))
    web.portal.call(web.app.state.ctx.open_writer().settled)  # the pixel's open, if any, is committed
    return result


def carried_slug(client) -> str:
    """A comparison an issue carried: what a vote link names."""
    with client.app.state.ctx.engine.connect() as connection:
        return connection.execute(text("SELECT c.slug FROM comparison c JOIN issue_comparison ic "
                                       "ON ic.comparison_id = c.id ORDER BY c.id LIMIT 1")).scalar_one()


def bad_link_answers(web, click: str) -> dict[str, tuple]:
    """The one answer each route gives a link that names nobody."""
    return answers(web, Links(confirm="nonsense", welcome_preferences="nonsense", recipient="nonsense", click=click))


@pytest.mark.parametrize("restored_backup", [False, True], ids=["next signup", "restored backup reuses the ids"])
def test_a_deleted_subscribers_links_act_for_nobody_when_another_person_subscribes(web, sent, db_url, restored_backup):
    "subscribe, confirm, get an issue, delete; another address subscribes: every old link gets the bad-link answer"
    story = Story(web, sent, db_url)
    try:
        story.subscribe("ada@example.com")
        ada, confirm, welcome = story.confirm("ada@example.com")
        ada_delivery, recipient, click = story.send_issue("ada@example.com")
        old = Links(confirm=confirm, welcome_preferences=welcome, recipient=recipient, click=click)
        assert web.get(f"/p/{recipient}").status_code == web.get(f"/p/{welcome}").status_code == 200
        csrf = CSRF.search(web.get(f"/p/{recipient}").text).group(1)
        assert web.post(f"/p/{recipient}", data={"action": "delete", "confirm": "yes", "csrf": csrf}).status_code == 303
        if restored_backup:  # the counters go back to before Ada: her ids are handed out again
            reuse_ids(story.engine, subscriber=ada, delivery=ada_delivery)

        bob = story.subscribe("bob@example.com")
        assert bob == ada if restored_backup else bob > ada  # ids are never handed out twice, but by a backup
        bob_pending = story.rows()
        assert answers(web, old) == bad_link_answers(web, click)  # her confirm link does not confirm Bob
        assert story.rows() == bob_pending

        story.confirm("bob@example.com")
        bob_delivery, bob_token, _ = story.send_issue("bob@example.com")
        assert bob_delivery == ada_delivery if restored_backup else bob_delivery > ada_delivery
        before = story.rows()

        assert answers(web, old) == bad_link_answers(web, click)
        assert story.rows() == before
        assert web.get(f"/p/{bob_token}").status_code == 200  # Bob's own links work
    finally:
        story.close()


def reuse_ids(engine, *, subscriber: int, delivery: int) -> None:
    """Make the next subscriber and delivery get these ids, as restoring an older backup of the counters can."""
    with engine.begin() as connection:
        if connection.dialect.name == "sqlite":  # without its sqlite_sequence row a table starts again at max(id) + 1
            if connection.execute(text("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")).first():
                connection.execute(text("DELETE FROM sqlite_sequence WHERE name IN ('subscriber', 'delivery')"))
            return
        for table, next_id in (("subscriber", subscriber), ("delivery", delivery)):
            connection.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {next_id}, false)"))


@pytest.mark.parametrize("table", ["subscriber", "delivery"])
def test_deleting_the_newest_row_never_gives_its_id_to_the_next(engine, table):
    "three rows, the newest deleted: the next row gets a new id, on SQLite as on PostgreSQL"
    insert = {
        "subscriber": "INSERT INTO subscriber (email, email_key, name, status, categories, created_at, updated_at) "
                      "VALUES (:e, :e, '', 'active', '', '2026-01-01', '2026-01-01')",
        "delivery": "INSERT INTO delivery (issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, "
                    "created_at) VALUES (1, :n, 1, 'pending', 0, 0, '2026-01-01')",
    }[table]
    with engine.begin() as connection:
        ids = [connection.execute(text(insert + " RETURNING id"), {"n": n, "e": f"r{n}@example.com"}).scalar_one()
               for n in range(3)]
        connection.execute(text(f"DELETE FROM {table} WHERE id = :id"), {"id": ids[-1]})
    with engine.begin() as connection:
        new = connection.execute(text(insert + " RETURNING id"), {"n": 3, "e": "r3@example.com"}).scalar_one()
    assert new > ids[-1]


def test_every_way_of_storing_a_subscriber_draws_a_tag_of_its_own(engine, tmp_path):
    "a CSV import, `subscribers add`, the ORM and raw SQL: each row gets its own random tag and needs it in its links"
    from digest.importing.subscribers import add_subscriber, import_subscribers
    from tests.factories import add_subscribers

    now = datetime.now(timezone.utc)
    csv = tmp_path / "list.csv"
    csv.write_text("email\n" + "".join(f"imported{n}@example.com\n" for n in range(200)))
    import_subscribers(engine=engine, path=csv, now=now)
    add_subscriber(engine=engine, email="added@example.com", now=now)
    add_subscribers(engine, 5)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO subscriber (email, email_key, name, status, categories, created_at, "
                                "updated_at) VALUES ('raw@example.com', 'raw@example.com', '', 'active', '', :t, :t)"),
                           {"t": now.replace(tzinfo=None)})
        rows = connection.execute(text("SELECT link_tag, accepts_untagged_links FROM subscriber")).all()
    tags = [tag for tag, _ in rows]
    assert len(rows) == 207 and len(set(tags)) == 207  # 48 random bits each: a repeat here is 1 in 10^10
    assert all(0 <= tag < 2**48 for tag in tags) and not any(untagged for _, untagged in rows)
