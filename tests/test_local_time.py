"""Delivery at each reader's own hour (DIGEST_DELIVERY=local, issue 19): due times on both sides of the date
line and across daylight-saving changes, SendGrid's send_at and batch_id, a cancel that calls back what SendGrid
holds, a crash between batches of different due times, and the outbox dating each file when it is due.

Real SQLite and PostgreSQL; the real sendgrid client against the local SendGrid-compatible server."""

from __future__ import annotations

import email
import email.utils
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from digest.claim.local_time import OPEN_LEAD, LocalSchedule, due_times, opens_at
from digest.claim.opening import open_issue
from digest.cli.main import cli
from digest.config import Settings
from digest.send.loop import SendAborted
from digest.send.worker import Worker
from digest.transports.sendgrid import SendGridTransport
from digest.weekly import run
from storage.db import session_scope
from storage.deliveries import claim_batch
from storage.models import Delivery, DeliveryStatus, Issue, Subscriber
from tests.factories import add_comparison, add_subscribers, build_sender

UTC = timezone.utc
THURSDAY_NINE = "0 9 * * thu"
# Week 2026-W49: Monday 30 November to Sunday 6 December; Thursday is 3 December.
W49 = "2026-W49"


def at(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# -- the due-time table ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("zone, week, expected", [
    # Both sides of the date line: Thursday 09:00 there is Wednesday evening or Thursday evening in UTC.
    ("Pacific/Kiritimati", W49, at(2026, 12, 2, 19)),  # UTC+14: the first reader anywhere
    ("Pacific/Auckland", W49, at(2026, 12, 2, 20)),  # UTC+13 (daylight time in December)
    ("Pacific/Apia", W49, at(2026, 12, 2, 20)),  # UTC+13, west of the line's bend
    ("Asia/Kolkata", W49, at(2026, 12, 3, 3, 30)),  # UTC+5:30
    ("Europe/Berlin", W49, at(2026, 12, 3, 8)),  # UTC+1
    ("UTC", W49, at(2026, 12, 3, 9)),
    ("America/Los_Angeles", W49, at(2026, 12, 3, 17)),  # UTC-8
    ("Pacific/Pago_Pago", W49, at(2026, 12, 3, 20)),  # UTC-11: the last one, a day after Kiritimati
    # Across a daylight-saving change: the same 09:00 local is another hour in UTC the week after.
    ("Europe/Berlin", "2026-W43", at(2026, 10, 22, 7)),  # summer time, UTC+2
    ("Europe/Berlin", "2026-W44", at(2026, 10, 29, 8)),  # winter time since Sunday 25 October
    ("America/Los_Angeles", "2026-W44", at(2026, 10, 29, 16)),  # PDT, UTC-7, until Sunday 1 November
    ("America/Los_Angeles", "2026-W45", at(2026, 11, 5, 17)),  # PST, UTC-8
    ("Pacific/Auckland", "2026-W39", at(2026, 9, 23, 21)),  # NZST, UTC+12, until Sunday 27 September
    ("Pacific/Auckland", "2026-W40", at(2026, 9, 30, 20)),  # NZDT, UTC+13
])
def test_due_time_is_the_schedules_weekday_and_hour_in_the_readers_zone(zone, week, expected):
    times = due_times(week=week, schedule=THURSDAY_NINE, default_zone="UTC", zones=[zone])
    assert times.of(zone) == expected
    assert times.of(zone).astimezone(__import__("zoneinfo").ZoneInfo(zone)).strftime("%a %H:%M") == "Thu 09:00"


def test_a_schedule_hour_that_a_dst_change_skips_or_repeats_is_due_once_that_day():
    "02:30 on the Sunday clocks go forward does not exist in Berlin; on the Sunday they go back it exists twice"
    spring = due_times(week="2026-W13", schedule="30 2 * * sun", default_zone="UTC", zones=["Europe/Berlin"])
    autumn = due_times(week="2026-W43", schedule="30 2 * * sun", default_zone="UTC", zones=["Europe/Berlin"])
    assert spring.of("Europe/Berlin").astimezone(UTC).date().isoformat() == "2026-03-29"
    assert autumn.of("Europe/Berlin").astimezone(UTC).date().isoformat() == "2026-10-25"
    assert autumn.of("Europe/Berlin") in (at(2026, 10, 25, 0, 30), at(2026, 10, 25, 1, 30))


def test_a_readers_hour_already_past_is_due_at_once_and_no_zone_means_the_default():
    times = due_times(week=W49, schedule=THURSDAY_NINE, default_zone="Europe/Berlin",
                      zones=["Pacific/Auckland", "America/Los_Angeles", None, "Not/AZone"],
                      now=at(2026, 12, 3, 12))
    assert times.of("Pacific/Auckland") is None  # Wednesday 20:00 UTC has passed: at once
    assert times.of("America/Los_Angeles") == at(2026, 12, 3, 17)
    assert times.of(None) is None  # Berlin's 08:00 UTC has passed too
    assert times.of("Not/AZone") is None  # never stored; such a reader would get the default
    assert times.first == at(2026, 12, 3, 17)


def test_a_reader_whose_zone_is_unusable_is_due_at_the_default_zones_hour():
    "an unusable zone (whichever comes first) costs only its own readers their hour, never another zone's"
    times = due_times(week=W49, schedule=THURSDAY_NINE, default_zone="Europe/Berlin",
                      zones=["Pacific/Auckland", "Not/AZone", "America/Atlantis", ""], now=at(2026, 12, 1, 12))
    assert times.of("Not/AZone") == times.of("America/Atlantis") == times.of("") == times.of(None) == at(2026, 12, 3, 8)
    assert times.of("Pacific/Auckland") == at(2026, 12, 2, 20)


def test_a_week_the_schedule_does_not_fire_in_has_no_due_time_and_no_opening():
    "the scheduler words it (not an error): a schedule of the first of January, asked about a week in December"
    times = due_times(week=W49, schedule="0 9 1 1 *", default_zone="UTC", zones=["Pacific/Auckland"])
    assert times.default is None and times.of("Pacific/Auckland") is None and times.first is None
    assert opens_at(times) is None


# -- a week's issue, end to end -------------------------------------------------------------------------------

ZONES = {"Pacific/Auckland": 3, "Europe/Berlin": 2, "America/Los_Angeles": 2, None: 2}
DUE = {"Pacific/Auckland": at(2026, 12, 2, 20), "Europe/Berlin": at(2026, 12, 3, 8),
       "America/Los_Angeles": at(2026, 12, 3, 17), None: at(2026, 12, 3, 9)}


def readers_by_zone(engine) -> dict[str, str | None]:
    """Subscribers in ZONES, by address → zone."""
    zone_of = {}
    for zone, count in ZONES.items():
        ids = add_subscribers(engine, count, prefix=f"z{(zone or 'none').split('/')[-1].lower()}")
        with session_scope(engine) as session:
            session.execute(update(Subscriber).where(Subscriber.id.in_(ids)).values(timezone=zone))
            zone_of.update({s.email: zone for s in session.execute(
                select(Subscriber).where(Subscriber.id.in_(ids))).scalars()})
    return zone_of


@pytest.fixture
def local_sender(db_url, fake_sendgrid, request):
    """A sender with local delivery against the local SendGrid; it hands each delivery over up to 71 hours before
    its time (DIGEST_HOLD_HOURS), unless the test asks for another window (indirect parameter)."""
    clock = {"now": at(2026, 12, 2, 18, 30)}
    fake_sendgrid.clock = lambda: clock["now"].timestamp()
    settings = Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                        transport="sendgrid", sendgrid_api_key=fake_sendgrid.api_key, sendgrid_host=fake_sendgrid.url,
                        send_schedule=THURSDAY_NINE, timezone="UTC", delivery="local", batch_size=2,
                        hold_hours=getattr(request, "param", 71))
    transport = SendGridTransport(api_key=fake_sendgrid.api_key, host=fake_sendgrid.url, timeout=5)
    sender = build_sender(settings, transport=transport, sleep=lambda s: None, clock=lambda: clock["now"])
    sender.test_clock = clock
    yield sender
    sender.services.engine.dispose()


def sent_to(bodies) -> Counter:
    return Counter(p["to"][0]["email"] for body in bodies for p in body["personalizations"])


def test_the_issue_opens_before_the_first_zone_and_sendgrid_holds_each_batch_until_its_readers_hour(
        local_sender, fake_sendgrid):
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    zone_of = readers_by_zone(engine)

    early = run(services=local_sender.services, sender=local_sender, now=DUE["Pacific/Auckland"] - OPEN_LEAD
                - timedelta(minutes=1))
    assert early.opened is None and "not due yet" in early.reason and "first reader" in early.reason

    clock["now"] = DUE["Pacific/Auckland"] - OPEN_LEAD
    result = run(services=local_sender.services, sender=local_sender, now=clock["now"])
    assert result.opened.created and result.opened.deliveries == sum(ZONES.values())
    assert result.reports[0].scheduled == sum(ZONES.values()) and result.reports[0].later == 0

    bodies = fake_sendgrid.accepted
    assert sent_to(bodies) == Counter({address: 1 for address in zone_of})  # exactly once each
    assert len(fake_sendgrid.batch_ids) == 1  # one batch id for the issue ...
    for body in bodies:  # ... on every request, and each request holds readers of one due time
        zones = {zone_of[p["to"][0]["email"]] for p in body["personalizations"]}
        assert body["batch_id"] == fake_sendgrid.batch_ids[0]
        assert body["send_at"] in {int(DUE[zone].timestamp()) for zone in zones} and len(
            {DUE[zone] for zone in zones}) == 1
    with session_scope(engine) as session:
        issue = session.execute(select(Issue)).scalar_one()
        assert issue.provider_batch_id == fake_sendgrid.batch_ids[0] and issue.completed_at is not None
        dues = {(s.email, d.due_at) for d, s in session.execute(
            select(Delivery, Subscriber).join(Subscriber, Subscriber.id == Delivery.subscriber_id))}
    assert dues == {(address, DUE[zone]) for address, zone in zone_of.items()}

    again = run(services=local_sender.services, sender=local_sender, now=clock["now"] + timedelta(hours=3))
    assert sent_to(fake_sendgrid.accepted) == Counter({address: 1 for address in zone_of})
    assert again.reason == f"issue {W49} already exists"


def test_readers_whose_hour_passed_when_the_issue_opens_get_it_at_once(local_sender, fake_sendgrid):
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    zone_of = readers_by_zone(engine)
    clock["now"] = at(2026, 12, 3, 12)  # opened late, by hand: Auckland, Berlin and the default have passed
    run(services=local_sender.services, sender=local_sender, now=clock["now"], week=W49)
    held = {p["to"][0]["email"]: body.get("send_at") for body in fake_sendgrid.accepted
            for p in body["personalizations"]}
    assert held == {address: (int(DUE[zone].timestamp()) if zone == "America/Los_Angeles" else None)
                    for address, zone in zone_of.items()}
    assert all(("batch_id" in body) == ("send_at" in body) for body in fake_sendgrid.accepted)


def test_a_scheduler_back_after_its_first_readers_hour_opens_the_issue_at_once(local_sender, fake_sendgrid):
    "down until Wednesday 21:00 UTC: Auckland's 09:00 has passed, so the issue opens now, not before Berlin's hour"
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    zone_of = readers_by_zone(engine)
    clock["now"] = DUE["Pacific/Auckland"] + timedelta(hours=1)
    result = run(services=local_sender.services, sender=local_sender, now=clock["now"])
    assert result.opened is not None and result.opened.created, result.reason
    held = {p["to"][0]["email"]: body.get("send_at") for body in fake_sendgrid.accepted
            for p in body["personalizations"]}
    assert held == {address: (None if zone == "Pacific/Auckland" else int(DUE[zone].timestamp()))
                    for address, zone in zone_of.items()}


def test_a_delivery_due_beyond_72_hours_waits_for_a_later_run(local_sender, fake_sendgrid):
    "opened by hand on Monday, Thursday evening in Los Angeles is more than 71 hours ahead: it goes on Tuesday"
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 29, 8))
    zone_of = readers_by_zone(engine)
    clock["now"] = at(2026, 11, 30, 10)  # Thursday 09:00 UTC is 71 hours ahead: the last due time handed over
    first = run(services=local_sender.services, sender=local_sender, now=clock["now"], week=W49)
    report = first.reports[0]
    la = {address for address, zone in zone_of.items() if zone == "America/Los_Angeles"}
    assert set(sent_to(fake_sendgrid.accepted)) == set(zone_of) - la
    assert report.later == len(la) and report.remaining == len(la)
    assert report.next_claim_at == DUE["America/Los_Angeles"] - timedelta(hours=71)
    assert report.timing() == (f"{report.scheduled:,} handed over to be delivered at their readers' hour; "
                               f"{len(la):,} due too far ahead to hand over yet: from Mon 30 Nov 18:00 UTC, "
                               "the next run or worker does")  # what `digest send` and the worker's log say
    clock["now"] = report.next_claim_at + timedelta(minutes=5)
    # The next run is another process: it reads the issue's batch id instead of asking SendGrid for one of its
    # own, so a pause or cancel of that one id reaches every batch of the issue.
    next_process = build_sender(local_sender.services.settings, transport=local_sender.services.transport,
                                sleep=lambda s: None, clock=lambda: clock["now"])
    later = run(services=next_process.services, sender=next_process, now=clock["now"])
    assert later.reports[0].sent == len(la) and later.reports[0].remaining == 0
    assert sent_to(fake_sendgrid.accepted) == Counter({address: 1 for address in zone_of})
    assert all(body["send_at"] <= clock["now"].timestamp() + 72 * 3600 for body in fake_sendgrid.accepted)
    assert len(fake_sendgrid.batch_ids) == 1 and {body["batch_id"] for body in fake_sendgrid.accepted} == {
        fake_sendgrid.batch_ids[0]}
    next_process.services.engine.dispose()


def test_a_crash_between_batches_of_different_due_times_resumes_each_at_its_own_time(local_sender, fake_sendgrid):
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    zone_of = readers_by_zone(engine)
    clock["now"] = DUE["Pacific/Auckland"] - OPEN_LEAD
    # The batch id and the first batch go through; then SendGrid fails until the sender gives up: the run stops
    # mid-issue.
    attempts = local_sender.services.settings.max_attempts
    fake_sendgrid.script([("pass",), ("pass",)] + [("status", 503, {})] * attempts)
    with pytest.raises(SendAborted):
        run(services=local_sender.services, sender=local_sender, now=clock["now"])
    assert 0 < len(fake_sendgrid.accepted) < len(zone_of)
    # A sender that died holding a lease: its rows are taken over once the lease runs out.
    with session_scope(engine) as session:
        issue_id = session.execute(select(Issue.id)).scalar_one()
        dead = claim_batch(session=session, issue_id=issue_id, owner="gone-host:1", now=clock["now"],
                           lease_until=clock["now"] + timedelta(seconds=1), limit=2,
                           horizon=clock["now"] + timedelta(hours=71))
    assert dead is not None and dead.rows
    clock["now"] += timedelta(minutes=20)
    run(services=local_sender.services, sender=local_sender, now=clock["now"])
    counts = sent_to(fake_sendgrid.accepted)
    assert set(counts) == set(zone_of)
    assert all(n == 1 for address, n in counts.items() if address not in {row[2] for row in dead.rows})
    for body in fake_sendgrid.accepted:  # every batch still carries its readers' own due time
        for p in body["personalizations"]:
            assert body["send_at"] == int(DUE[zone_of[p["to"][0]["email"]]].timestamp())
    with session_scope(engine) as session:
        assert session.execute(select(Issue.completed_at)).scalar_one() is not None


def test_cancelling_the_issue_calls_back_what_sendgrid_holds(local_sender, fake_sendgrid):
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    zone_of = readers_by_zone(engine)
    clock["now"] = at(2026, 12, 3, 12)  # Auckland, Berlin and the default have passed: they go at once
    run(services=local_sender.services, sender=local_sender, now=clock["now"], week=W49)
    fake_sendgrid.clock = lambda: datetime.now(UTC).timestamp()  # the cancel happens now, in real time
    settings = local_sender.services.settings
    env = {"DIGEST_DATABASE_URL": settings.database_url, "DIGEST_TRANSPORT": "sendgrid",
           "SENDGRID_API_KEY": fake_sendgrid.api_key, "DIGEST_SENDGRID_HOST": fake_sendgrid.url,
           "DIGEST_SECRET_KEY": "k" * 32, "DIGEST_BASE_URL": "https://news.example.com", "DIGEST_DELIVERY": "local"}
    answer = CliRunner().invoke(cli, ["issue", "cancel", W49, "--yes"], env=env, terminal_width=300)
    la = {address for address, zone in zone_of.items() if zone == "America/Los_Angeles"}
    # Dated 3 December 2026, in the future of this machine's clock: all held, all called back.
    assert answer.exit_code == 0, answer.output
    assert f"dropped the {len(la)} deliveries" in answer.output
    assert fake_sendgrid.stopped[fake_sendgrid.batch_ids[0]][0] == "cancel"
    assert set(sent_to(fake_sendgrid.delivered())) == set(zone_of) - la
    with session_scope(engine) as session:
        statuses = dict(session.execute(select(Subscriber.email, Delivery.status)
                                        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)).all())
    assert statuses == {address: (DeliveryStatus.cancelled.value if address in la else DeliveryStatus.sent.value)
                        for address in zone_of}
    again = CliRunner().invoke(cli, ["issue", "cancel", W49, "--yes"], env=env, terminal_width=300)
    assert again.exit_code == 0 and "already" in again.output and len(fake_sendgrid.stopped) == 1


def test_global_delivery_sends_everyone_at_once_without_send_at(db_url, fake_sendgrid):
    settings = Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                        transport="sendgrid", sendgrid_api_key=fake_sendgrid.api_key, sendgrid_host=fake_sendgrid.url,
                        send_schedule=THURSDAY_NINE, timezone="UTC")
    transport = SendGridTransport(api_key=fake_sendgrid.api_key, host=fake_sendgrid.url, timeout=5)
    sender = build_sender(settings, transport=transport, sleep=lambda s: None)
    try:
        add_comparison(sender.services.engine, published_at=at(2026, 11, 30, 8))
        readers_by_zone(sender.services.engine)
        early = run(services=sender.services, sender=sender, now=at(2026, 12, 3, 8, 59))
        assert early.opened is None and "scheduled for Thu 03 Dec 09:00" in early.reason
        sent = run(services=sender.services, sender=sender, now=at(2026, 12, 3, 9))
    finally:
        sender.services.engine.dispose()
    # Nothing is handed over to wait for a reader's hour, so `digest send` says nothing of the kind.
    assert [(r.sent, r.scheduled, r.timing()) for r in sent.reports] == [(sum(ZONES.values()), 0, "")]
    assert sum(sent_to(fake_sendgrid.accepted).values()) == sum(ZONES.values())
    assert not any("send_at" in body or "batch_id" in body for body in fake_sendgrid.accepted)
    assert fake_sendgrid.batch_ids == []


def test_the_outbox_dates_each_file_when_it_is_due(db_url, tmp_path):
    settings = Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                        transport="outbox", outbox_dir=tmp_path / "outbox", send_schedule=THURSDAY_NINE,
                        timezone="UTC", delivery="local", hold_hours=71)
    now = DUE["Pacific/Auckland"] - OPEN_LEAD
    sender = build_sender(settings, sleep=lambda s: None, clock=lambda: now)
    try:
        add_comparison(sender.services.engine, published_at=at(2026, 11, 30, 8))
        zone_of = readers_by_zone(sender.services.engine)
        run(services=sender.services, sender=sender, now=now)
    finally:
        sender.services.engine.dispose()
    dated = {}
    for path in (tmp_path / "outbox").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes())
        dated[message["To"].split("<")[-1].rstrip(">")] = email.utils.parsedate_to_datetime(message["Date"])
    assert dated == {address: DUE[zone] for address, zone in zone_of.items()}


# -- workers ----------------------------------------------------------------------------------------------------

def test_two_workers_send_a_local_time_issue_once_and_wait_for_what_is_due_later(postgres_url, fake_sendgrid):
    "two workers side by side: every reader once, at their hour; then nothing is looked at until it may go"
    clock = {"now": at(2026, 11, 30, 10)}  # Monday: Los Angeles' Thursday 09:00 is beyond 71 hours
    fake_sendgrid.clock = lambda: clock["now"].timestamp()
    settings = Settings(database_url=postgres_url, secret_key="k" * 32, base_url="https://news.example.com",
                        transport="sendgrid", sendgrid_api_key=fake_sendgrid.api_key, sendgrid_host=fake_sendgrid.url,
                        send_schedule=THURSDAY_NINE, timezone="UTC", delivery="local", batch_size=3, hold_hours=71)
    senders = [build_sender(settings, transport=SendGridTransport(api_key=fake_sendgrid.api_key,
                                                                  host=fake_sendgrid.url, timeout=5),
                            sleep=lambda s: None, clock=lambda: clock["now"]) for _ in range(2)]
    engine = senders[0].services.engine
    add_comparison(engine, published_at=at(2026, 11, 29, 8))
    zone_of = {}
    for _ in range(4):
        zone_of.update(readers_by_zone(engine))
    assert open_issue(engine=engine, week=W49, now=clock["now"], local=LocalSchedule.of(settings)).created
    workers = [Worker(services=sender.services, sender=sender, idle_seconds=0.01) for sender in senders]
    try:
        threads = [threading.Thread(target=worker.run, kwargs={"once": True}) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        la = {address for address, zone in zone_of.items() if zone == "America/Los_Angeles"}
        assert sent_to(fake_sendgrid.accepted) == Counter({address: 1 for address in set(zone_of) - la})
        assert sum(worker.report.sent for worker in workers) == len(zone_of) - len(la)
        requests = fake_sendgrid.requests
        assert all(workers[0].drain() is False for _ in range(3)) and fake_sendgrid.requests == requests
        clock["now"] = DUE["America/Los_Angeles"] - senders[0].hold_window
        assert workers[0].drain() is True
        assert sent_to(fake_sendgrid.accepted) == Counter({address: 1 for address in zone_of})
        # Two workers may both ask SendGrid for a batch id at first; the store keeps one, and every request has it.
        assert {body["batch_id"] for body in fake_sendgrid.accepted} == {_batch_id(engine)}
        for body in fake_sendgrid.accepted:
            assert {DUE[zone_of[p["to"][0]["email"]]] for p in body["personalizations"]} == {
                datetime.fromtimestamp(body["send_at"], UTC)}
    finally:
        for sender in senders:
            sender.services.engine.dispose()


def _batch_id(engine) -> str:
    with session_scope(engine) as session:
        return session.execute(select(Issue.provider_batch_id)).scalar_one()


# -- the hold window (DIGEST_HOLD_HOURS): a send kept within reach of a pause -------------------------------------

@pytest.mark.parametrize("local_sender", [3], indirect=True)
def test_hourly_ticks_hand_each_zone_over_within_the_hold_window_before_its_hour(local_sender, fake_sendgrid):
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    zone_of = readers_by_zone(engine)
    handed_at = {}
    tick = at(2026, 12, 2, 17, 40)  # the scheduler's hourly catch-up, at whatever minute it started
    while tick < at(2026, 12, 4):
        clock["now"] = tick
        before = len(fake_sendgrid.accepted)
        run(services=local_sender.services, sender=local_sender, now=tick)
        for body in fake_sendgrid.accepted[before:]:
            handed_at.update({p["to"][0]["email"]: tick for p in body["personalizations"]})
        tick += timedelta(hours=1)
    assert sent_to(fake_sendgrid.accepted) == Counter({address: 1 for address in zone_of})
    for address, zone in zone_of.items():  # never more than 3 hours ahead, always before the hour
        assert DUE[zone] - timedelta(hours=3) <= handed_at[address] < DUE[zone], (zone, handed_at[address])
    with session_scope(engine) as session:
        issue = session.execute(select(Issue)).scalar_one()
    assert issue.completed_at == at(2026, 12, 3, 14, 40)  # when Los Angeles, the last zone, was handed over


@pytest.mark.parametrize("local_sender", [3], indirect=True)
def test_deliveries_whose_hour_passed_while_the_sender_was_down_go_at_once_not_held(local_sender, fake_sendgrid):
    "opened Wednesday 18:00, then no tick until Thursday 12:00: Berlin's and the default's hours have passed"
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    zone_of = readers_by_zone(engine)
    clock["now"] = at(2026, 12, 2, 18)
    run(services=local_sender.services, sender=local_sender, now=clock["now"], week=W49)
    before = len(fake_sendgrid.accepted)
    clock["now"] = at(2026, 12, 3, 12)
    run(services=local_sender.services, sender=local_sender, now=clock["now"])
    late = fake_sendgrid.accepted[before:]
    assert {zone_of[p["to"][0]["email"]] for body in late for p in body["personalizations"]} == {"Europe/Berlin", None}
    assert all("send_at" not in body and "batch_id" not in body for body in late)


@pytest.mark.parametrize("local_sender", [3], indirect=True)
def test_a_pause_stops_what_is_not_handed_over_and_pauses_what_sendgrid_holds_until_resumed(
        local_sender, fake_sendgrid):
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    zone_of = readers_by_zone(engine)
    clock["now"] = at(2026, 12, 3, 6, 30)  # the issue is out for Auckland; Berlin and the default are handed over
    run(services=local_sender.services, sender=local_sender, now=at(2026, 12, 2, 18), week=W49)
    run(services=local_sender.services, sender=local_sender, now=clock["now"])
    by_zone = {zone: {a for a, z in zone_of.items() if z == zone} for zone in ZONES}
    assert set(sent_to(fake_sendgrid.accepted)) == by_zone["Pacific/Auckland"] | by_zone["Europe/Berlin"] | by_zone[None]

    fake_sendgrid.clock = lambda: clock["now"].timestamp()
    env = {"DIGEST_DATABASE_URL": local_sender.services.settings.database_url, "DIGEST_TRANSPORT": "sendgrid",
           "SENDGRID_API_KEY": fake_sendgrid.api_key, "DIGEST_SENDGRID_HOST": fake_sendgrid.url,
           "DIGEST_SECRET_KEY": "k" * 32, "DIGEST_BASE_URL": "https://news.example.com", "DIGEST_DELIVERY": "local"}
    paused = CliRunner().invoke(cli, ["issue", "pause", W49], env=env, terminal_width=300)
    assert paused.exit_code == 0, paused.output
    assert fake_sendgrid.stopped[fake_sendgrid.batch_ids[0]][0] == "pause" and "holds back" in paused.output
    # Held back at SendGrid: Berlin and the default are not delivered while paused (the machine's clock is
    # earlier than December 2026, so both are more than 10 minutes ahead); Auckland had its hour already.
    assert set(sent_to(fake_sendgrid.delivered())) == by_zone["Pacific/Auckland"]
    clock["now"] = at(2026, 12, 3, 15)
    assert run(services=local_sender.services, sender=local_sender, now=clock["now"]).held  # nothing more goes
    assert set(sent_to(fake_sendgrid.accepted)) == set(zone_of) - by_zone["America/Los_Angeles"]

    resumed = CliRunner().invoke(cli, ["issue", "resume", W49], env=env, terminal_width=300)
    assert resumed.exit_code == 0, resumed.output
    assert fake_sendgrid.batch_ids[0] not in fake_sendgrid.stopped  # released: SendGrid sends them again
    run(services=local_sender.services, sender=local_sender, now=clock["now"])
    assert sent_to(fake_sendgrid.delivered()) == Counter({address: 1 for address in zone_of})


# -- the monthly email at each reader's hour ------------------------------------------------------------------------

def test_the_monthly_email_opens_before_its_first_reader_and_is_due_at_each_readers_hour(local_sender, fake_sendgrid):
    "3 December 2026 is the month's first Thursday: the monthly readers in Auckland and Los Angeles get it then"
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 23, 8))
    monthly = {}
    for zone in ("Pacific/Auckland", "America/Los_Angeles"):
        (reader,) = add_subscribers(engine, 1, prefix=f"m{zone.split('/')[-1].lower()}")
        with session_scope(engine) as session:
            subscriber = session.get(Subscriber, reader)
            subscriber.timezone, subscriber.cadence = zone, "monthly"
            monthly[subscriber.email] = zone
    add_subscribers(engine, 1, prefix="weekly")
    clock["now"] = at(2026, 11, 26, 9)
    run(services=local_sender.services, sender=local_sender, now=clock["now"], week="2026-W48")  # November's issue
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    before = len(fake_sendgrid.accepted)

    clock["now"] = DUE["Pacific/Auckland"] - OPEN_LEAD
    result = run(services=local_sender.services, sender=local_sender, now=clock["now"])
    assert result.monthly is not None and result.monthly.created, result.monthly
    bodies = [body for body in fake_sendgrid.accepted[before:] if issue_of(body) == "2026-M12"]
    assert {p["to"][0]["email"]: body["send_at"] for body in bodies for p in body["personalizations"]} == {
        address: int(DUE[zone].timestamp()) for address, zone in monthly.items()}
    again = run(services=local_sender.services, sender=local_sender, now=clock["now"] + timedelta(hours=1))
    assert again.monthly.issue is not None and not again.monthly.created
    assert len([b for b in fake_sendgrid.accepted if issue_of(b) == "2026-M12"]) == len(bodies)


def issue_of(body: dict) -> str:
    return body["custom_args"]["issue"]


def test_readers_of_one_due_time_fill_their_batches_whatever_the_order_they_signed_up_in(local_sender, fake_sendgrid):
    "six readers signed up alternately in Auckland and Berlin, batches of two: two requests per due time, not six "
    "of one (the fan-out inserts a segment's rows in due order, so a claim finds each due time's readers side by side)"
    engine, clock = local_sender.services.engine, local_sender.test_clock
    add_comparison(engine, published_at=at(2026, 11, 30, 8))
    for n in range(6):
        [reader] = add_subscribers(engine, 1)
        with session_scope(engine) as session:
            session.execute(update(Subscriber).where(Subscriber.id == reader)
                            .values(timezone=("Pacific/Auckland", "Europe/Berlin")[n % 2]))
    clock["now"] = DUE["Pacific/Auckland"] - OPEN_LEAD
    result = run(services=local_sender.services, sender=local_sender, now=clock["now"])
    assert result.reports[0].scheduled == 6
    auckland, berlin = int(DUE["Pacific/Auckland"].timestamp()), int(DUE["Europe/Berlin"].timestamp())
    assert sorted((body["send_at"], len(body["personalizations"])) for body in fake_sendgrid.accepted) == [
        (auckland, 1), (auckland, 2), (berlin, 1), (berlin, 2)]
