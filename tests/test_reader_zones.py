"""The reader's time (issue 19) where it comes in: the signup's hidden time zone, the CSV import's timezone
column, and the preference centre's time zone and cadence. SQLite and PostgreSQL; signup emails as in
production (tests/fixtures_signup.py). In a real browser: tests/test_reader_zones_browser.py."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from itsdangerous import URLSafeTimedSerializer
from sqlalchemy import select
from sqlmodel import Session

from digest.importing import InvalidImport, add_subscriber, import_subscribers
from digest.subscribers.confirmation import CONFIRM_SALT, ConfirmTokens, _address_hash
from storage.db import session_scope
from storage.models import Cadence, Subscriber, SubscriberStatus
from tests.factories import add_subscribers, recipient_token
from tests import fixtures_signup

web, sent = fixtures_signup.web, fixtures_signup.sent  # fixtures: these take the place of fixtures_web's

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
CONFIRM_LINK = re.compile(r"http://testserver/confirm/([A-Za-z0-9_\-.]+)")


# -- helpers ---------------------------------------------------------------------------------------------

def csrf_of(page_html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', page_html).group(1)


def sign_up(web, email: str, **fields):
    page = web.get("/subscribe")
    return web.post("/subscribe", data={"email": email, "csrf": csrf_of(page.text), **fields})


def stored(engine, email_key: str) -> Subscriber | None:
    with session_scope(engine) as session:
        return session.execute(select(Subscriber).where(Subscriber.email_key == email_key)).scalars().first()


def confirmed(web, sent, email: str) -> Subscriber:
    """Follow the one confirmation email to ``email`` and press its button; the row afterwards."""
    [mail] = sent.to(email)
    token = CONFIRM_LINK.search(mail.text).group(1)
    assert web.post(f"/confirm/{token}").status_code == 200
    return stored(web.app.state.ctx.engine, email.lower())


def everyone(engine) -> list[tuple]:
    with session_scope(engine) as session:
        return [(s.email_key, s.name, s.categories, s.timezone, s.status, s.updated_at)
                for s in session.execute(select(Subscriber).order_by(Subscriber.email_key)).scalars()]


def preferences(web, subscriber_id: int) -> str:
    return f"/p/{recipient_token(web.app.state.ctx.engine, web.app.state.ctx.signer, subscriber_id)}"


def post_preferences(web, path: str, **fields):
    page = web.get(path)
    assert page.status_code == 200, page.text
    return web.post(path, data={"csrf": csrf_of(page.text), **fields})


def row(web, subscriber_id: int) -> Subscriber:
    with Session(web.app.state.ctx.engine) as session:
        return session.get(Subscriber, subscriber_id)


def selected_zone(page_html: str) -> str:
    select_html = re.search(r'<select id="timezone" name="timezone"[^>]*>(.*?)</select>', page_html, re.S).group(1)
    [value] = re.findall(r'<option value="([^"]*)" selected>', select_html)
    return html.unescape(value)


def write(tmp_path: Path, text: str, name: str = "people.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- signup ----------------------------------------------------------------------------------------------

def test_the_form_carries_an_empty_zone_field_and_its_script_is_served_under_the_csp(web):
    """the form's hidden timezone field is empty until /static/reader-zone.js fills it; only that page allows scripts"""
    page = web.get("/subscribe")

    assert '<input type="hidden" name="timezone" value="" data-browser-zone>' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    script = web.get("/static/reader-zone.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "Intl.DateTimeFormat().resolvedOptions().timeZone" in script.text
    assert "script-src" not in web.get("/archive").headers["content-security-policy"]


def test_a_zone_from_the_form_waits_in_the_link_and_is_stored_on_confirmation(web, sent):
    """Pacific/Auckland from the form: on the pending row, in the signed link, and the confirmed reader's"""
    answer = sign_up(web, "kiri@example.com", timezone="Pacific/Auckland")

    assert answer.status_code == 200
    assert sent.to("kiri@example.com")  # the mailer has stored the pending row by now
    assert stored(web.app.state.ctx.engine, "kiri@example.com").timezone == "Pacific/Auckland"
    person = confirmed(web, sent, "kiri@example.com")
    assert (person.status, person.timezone) == (SubscriberStatus.active, "Pacific/Auckland")


def test_a_signup_without_the_field_stores_no_zone(web, sent):
    """no timezone field at all (no JavaScript, or an old page): the reader gets the newsletter's time"""
    sign_up(web, "plain@example.com")

    person = confirmed(web, sent, "plain@example.com")
    assert (person.status, person.timezone) == (SubscriberStatus.active, None)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd", "Europe/" + "x" * 300, " "])
def test_an_unknown_or_malformed_zone_is_dropped_not_refused(web, sent, zone):
    """a zone we do not know (a newer browser's, or junk) answers like any signup and stores None"""
    plain = sign_up(web, "plain@example.com")
    answer = sign_up(web, "odd@example.com", timezone=zone)

    assert (answer.status_code, answer.content) == (plain.status_code, plain.content)
    person = confirmed(web, sent, "odd@example.com")
    assert (person.status, person.timezone) == (SubscriberStatus.active, None)


def test_json_signups_may_carry_a_zone(web, sent):
    """JSON: "timezone" is optional, a known one is stored, an unknown one dropped, a non-string refused"""
    assert web.post("/subscribe", json={"email": "j1@example.com", "timezone": "Asia/Kolkata"}).status_code == 202
    assert web.post("/subscribe", json={"email": "j2@example.com", "timezone": "Nowhere/Town"}).status_code == 202
    refused = web.post("/subscribe", json={"email": "j3@example.com", "timezone": 5})

    assert refused.status_code == 400 and refused.json()["field"] == "timezone"
    assert confirmed(web, sent, "j1@example.com").timezone == "Asia/Kolkata"
    assert confirmed(web, sent, "j2@example.com").timezone is None


def test_a_link_signed_before_zones_still_confirms(web, sent):
    """an old link (no zone in it, or not even a tag, for a row from before tags) confirms, storing no zone"""
    engine = web.app.state.ctx.engine
    old_tagged, old_untagged = add_subscribers(engine, 2, status=SubscriberStatus.pending)
    with session_scope(engine) as session:
        session.get(Subscriber, old_untagged).accepts_untagged_links = True
    old = URLSafeTimedSerializer(web.app.state.ctx.settings.secret_key, salt=CONFIRM_SALT)
    for sid, tagged in ((old_tagged, True), (old_untagged, False)):
        person = row(web, sid)
        payload = [sid, _address_hash(person.email_key), "", ""] + ([person.link_tag] if tagged else [])
        assert web.post(f"/confirm/{old.dumps(payload)}").status_code == 200
        assert (row(web, sid).status, row(web, sid).timezone) == (SubscriberStatus.active, None)


def test_a_returning_reader_keeps_their_zone_when_the_link_has_none(web, sent):
    """someone who left and signs up again without JavaScript keeps the zone they had; with one, it is the new"""
    engine = web.app.state.ctx.engine
    sid, = add_subscribers(engine, 1, status=SubscriberStatus.unsubscribed)
    with session_scope(engine) as session:
        session.get(Subscriber, sid).timezone = "Europe/Lisbon"
    email = row(web, sid).email

    sign_up(web, email)
    assert confirmed(web, sent, email).timezone == "Europe/Lisbon"


def test_the_token_reads_back_its_zone_and_refuses_a_zone_of_the_wrong_type():
    """ConfirmTokens: the zone round-trips; a payload with a non-string zone, or more fields, is a bad token"""
    from digest.links import BadToken

    tokens = ConfirmTokens("k" * 32, clock=lambda: datetime.now(timezone.utc), max_age=timedelta(days=7))
    ref = tokens.read(tokens.dumps(subscriber_id=3, email_key="a@example.com", name="", categories="", tag=7,
                                   zone="America/Sao_Paulo"))
    assert (ref.tag, ref.timezone) == (7, "America/Sao_Paulo")
    assert tokens.read(tokens.dumps(subscriber_id=3, email_key="a@example.com", name="", categories="",
                                    tag=7)).timezone is None
    plain = URLSafeTimedSerializer("k" * 32, salt=CONFIRM_SALT)
    assert tokens.read(plain.dumps([3, "h", "", "", 7, "Nowhere/Town"])).timezone is None  # zoneinfo lost it
    for payload in ([3, "h", "", "", 7, 5], [3, "h", "", "", 7, "UTC", "more"]):
        with pytest.raises(BadToken):
            tokens.read(plain.dumps(payload))


# -- the CSV import --------------------------------------------------------------------------------------

def test_an_import_stores_the_timezone_column_blank_meaning_none(engine, tmp_path):
    """a timezone column: names stored as written, blank cells None; a known reader's zone is updated"""
    add_subscriber(engine=engine, email="known@example.com", name="Known", now=NOW)
    path = write(tmp_path, "email,name,timezone\n"
                           "ana@example.com,Ana,America/Sao_Paulo\n"
                           "bo@example.com,Bo,\n"
                           "known@example.com,Known,Asia/Tokyo\n"
                           "short@example.com\n")

    result = import_subscribers(engine=engine, path=path, now=LATER)

    assert (result.created, result.updated, result.bad_rows) == (3, 1, 0)
    zones = {key: zone for key, _, _, zone, _, _ in everyone(engine)}
    assert zones == {"ana@example.com": "America/Sao_Paulo", "bo@example.com": None,
                     "known@example.com": "Asia/Tokyo", "short@example.com": None}


def test_a_changed_zone_alone_counts_as_updated_and_a_repeat_is_unchanged(engine, tmp_path):
    """same name and categories, another zone: updated (and written); the same file again: unchanged, untouched"""
    write(tmp_path, "email,timezone\nana@example.com,Europe/Paris\n", "first.csv")
    import_subscribers(engine=engine, path=tmp_path / "first.csv", now=NOW)
    path = write(tmp_path, "email,timezone\nana@example.com,Europe/Madrid\n")

    moved = import_subscribers(engine=engine, path=path, now=LATER)
    again = import_subscribers(engine=engine, path=path, now=datetime(2026, 11, 27, tzinfo=timezone.utc))

    assert (moved.updated, again.unchanged) == (1, 1)
    [(_, _, _, zone, _, updated_at)] = everyone(engine)
    assert (zone, updated_at) == ("Europe/Madrid", LATER)


def test_a_file_without_the_column_leaves_stored_zones_as_they_are(engine, tmp_path):
    """an old-style list (email,name) updates names but never wipes the zones readers chose"""
    import_subscribers(engine=engine, path=write(tmp_path, "email,timezone\nana@example.com,Asia/Seoul\n", "a.csv"),
                       now=NOW)

    result = import_subscribers(engine=engine, path=write(tmp_path, "email,name\nana@example.com,Ana\n"), now=LATER)

    assert result.updated == 1
    [(_, name, _, zone, _, _)] = everyone(engine)
    assert (name, zone) == ("Ana", "Asia/Seoul")


def test_an_unknown_zone_refuses_the_file_naming_file_line_and_field_and_stores_nothing(engine, tmp_path):
    """one unknown name on line 5 (after good rows and a quoted two-line name): the error names people.csv, line
    5 and the timezone field; the store is exactly as before, known readers included"""
    add_subscriber(engine=engine, email="known@example.com", name="Known", now=NOW)
    before = everyone(engine)
    path = write(tmp_path, "email,name,timezone\n"
                           "known@example.com,Renamed,Europe/Berlin\n"
                           "ana@example.com,\"Ana\nMaria\",Europe/Oslo\n"
                           "bo@example.com,Bo,Mars/Olympus_Mons\n"
                           "cy@example.com,Cy,EST\n")

    with pytest.raises(InvalidImport) as refused:
        import_subscribers(engine=engine, path=path, now=LATER)

    problems = refused.value.problems
    assert problems[0].startswith("people.csv: nothing was imported: 1 row with an unknown time zone")
    assert problems[1:] == ["people.csv: line 5: 'bo@example.com': timezone: unknown time zone 'Mars/Olympus_Mons': "
                            "use an IANA name such as Europe/Berlin"]
    assert everyone(engine) == before


def test_digest_subscribers_add_sets_a_zone_keeps_it_when_not_given_and_refuses_an_unknown_one(engine):
    """add with --timezone stores it; an update without it leaves it; "" clears it; an unknown name is refused"""
    add_subscriber(engine=engine, email="ana@example.com", now=NOW, timezone="Pacific/Auckland")
    add_subscriber(engine=engine, email="ana@example.com", name="Ana", now=LATER)
    [(_, name, _, zone, _, _)] = everyone(engine)
    assert (name, zone) == ("Ana", "Pacific/Auckland")
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        add_subscriber(engine=engine, email="ana@example.com", now=LATER, timezone="Mars/Olympus")
    add_subscriber(engine=engine, email="ana@example.com", name="Ana", now=LATER, timezone="")
    [(_, _, _, zone, _, _)] = everyone(engine)
    assert zone is None


def test_the_header_names_the_new_column_when_refusing_one_it_does_not_know(engine, tmp_path):
    """an unknown column's message lists timezone among the columns one may use"""
    with pytest.raises(InvalidImport) as refused:
        import_subscribers(engine=engine, path=write(tmp_path, "email,zone\n"), now=NOW)

    assert "email,name,categories,timezone (name, categories and timezone optional)" in str(refused.value)


# -- the preference centre -------------------------------------------------------------------------------

def test_the_page_shows_the_current_zone_and_cadence(web):
    """a reader in Asia/Tokyo sees it selected, weekly ticked; one without a zone sees the newsletter's time"""
    engine = web.app.state.ctx.engine
    tokyo, plain = add_subscribers(engine, 2)
    with session_scope(engine) as session:
        session.get(Subscriber, tokyo).timezone = "Asia/Tokyo"

    page = web.get(preferences(web, tokyo)).text
    assert selected_zone(page) == "Asia/Tokyo"
    assert '<input type="radio" name="cadence" value="weekly" checked>' in page
    assert "Monthly: once a month, the month&#39;s best verdicts you haven&#39;t seen" in page
    plain_page = web.get(preferences(web, plain)).text
    assert selected_zone(plain_page) == ""
    assert f"<option value=\"\" selected>The newsletter&#39;s time ({web.app.state.ctx.settings.timezone})</option>" \
        in plain_page


def test_saving_a_zone_and_monthly_stores_them_and_says_so(web):
    """choose Pacific/Auckland and monthly: 303 to ?saved=timing, stored, the page says so and shows them chosen"""
    sid, = add_subscribers(web.app.state.ctx.engine, 1)
    path = preferences(web, sid)

    answer = post_preferences(web, path, action="timing", timezone="Pacific/Auckland", cadence="monthly")

    assert answer.status_code == 303 and answer.headers["location"] == f"{path}?saved=timing"
    assert (row(web, sid).timezone, Cadence(row(web, sid).cadence)) == ("Pacific/Auckland", Cadence.monthly)
    page = web.get(answer.headers["location"]).text
    assert "Saved. You will get one email a month, the month&#39;s best verdicts you haven&#39;t seen, timed for " \
           "Pacific/Auckland." in page
    assert selected_zone(page) == "Pacific/Auckland" and "You get one email a month." in page
    assert '<input type="radio" name="cadence" value="monthly" checked>' in page

    back = post_preferences(web, path, action="timing", timezone="", cadence="weekly")
    assert back.status_code == 303
    assert (row(web, sid).timezone, Cadence(row(web, sid).cadence)) == (None, Cadence.weekly)


@pytest.mark.parametrize("fields", [
    {"timezone": "Mars/Olympus_Mons", "cadence": "monthly"},
    {"timezone": "../../etc/passwd", "cadence": "monthly"},
    {"timezone": "EST5EDT", "cadence": "monthly"},  # a real zone, but not one the page offers
    {"timezone": "Europe/Rome", "cadence": "daily"},
    {"timezone": "Europe/Rome"},
])
def test_a_forged_zone_or_cadence_gets_the_page_again_with_a_400_and_stores_nothing(web, fields):
    """values the form never offers: the page again with the error, the row untouched"""
    sid, = add_subscribers(web.app.state.ctx.engine, 1)
    before = row(web, sid)

    answer = post_preferences(web, preferences(web, sid), action="timing", **fields)

    assert answer.status_code == 400 and 'role="alert"' in answer.text
    assert "<h1>Your email preferences</h1>" in answer.text
    after = row(web, sid)
    assert (after.timezone, after.cadence, after.updated_at) == (before.timezone, before.cadence, before.updated_at)


def test_the_form_needs_its_csrf_field(web):
    """the timing form is CSRF-protected like every other form on the page"""
    sid, = add_subscribers(web.app.state.ctx.engine, 1)
    path = preferences(web, sid)
    web.get(path)

    answer = web.post(path, data={"action": "timing", "timezone": "Asia/Tokyo", "cadence": "monthly"})

    assert answer.status_code == 403 and row(web, sid).timezone is None


def test_a_zone_outside_the_list_that_the_reader_already_has_is_offered_and_kept(web):
    """an import may store "US/Pacific" (an alias the list leaves out): it is shown chosen, and saving keeps it"""
    engine = web.app.state.ctx.engine
    sid, = add_subscribers(engine, 1)
    with session_scope(engine) as session:
        session.get(Subscriber, sid).timezone = "US/Pacific"
    path = preferences(web, sid)

    assert selected_zone(web.get(path).text) == "US/Pacific"
    answer = post_preferences(web, path, action="timing", timezone="US/Pacific", cadence="monthly")
    assert answer.status_code == 303 and row(web, sid).timezone == "US/Pacific"


def test_the_data_download_names_the_zone_and_cadence(web):
    """Download my data lists the time zone and how often, with what null means"""
    engine = web.app.state.ctx.engine
    sid, = add_subscribers(engine, 1)
    with session_scope(engine) as session:
        reader = session.get(Subscriber, sid)
        reader.timezone, reader.cadence = "Africa/Nairobi", Cadence.monthly.value

    data = json.loads(post_preferences(web, preferences(web, sid), action="export").text)

    assert (data["subscriber"]["timezone"], data["subscriber"]["cadence"]) == ("Africa/Nairobi", "monthly")
    assert "null" in data["subscriber"]["timezone_note"]
