"""The sender's retry policy and crash recovery, on both databases, through the Transport protocol."""

import dataclasses

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, update

from tests.factories import build_sender
from digest.config import Settings
from digest.send.ratelimit import SharedRateLimit
from digest.send.loop import SendAborted
from digest.transports.base import PermanentError, RateLimited, TransientError
from digest.claim.opening import open_issue
from storage.throttle import block_sending
from storage.db import make_engine, session_scope
from storage.models import Delivery, DeliveryStatus, SubscriberStatus
from tests.factories import RecordingTransport, add_comparison, add_subscribers

UTC = timezone.utc
SLOT = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves; sleeping moves it too, so waits are exact and instant."""

    def __init__(self, start: datetime):
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock(SLOT)


def make_sender(db_url, tmp_path, transport, clock, **settings):
    config = Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                      outbox_dir=tmp_path / "outbox", transport="outbox", **settings)
    return build_sender(config, transport=transport, clock=clock, sleep=clock.sleep, jitter=lambda: 0.5)


def issue_with(sender, subscribers: int):
    add_comparison(sender.services.engine, published_at=SLOT - timedelta(days=2))
    add_subscribers(sender.services.engine, subscribers)
    return open_issue(engine=sender.services.engine, week="2026-W48", now=SLOT).issue


def statuses(engine) -> dict[str, int]:
    with session_scope(engine) as session:
        rows = session.execute(select(Delivery.status)).scalars().all()
    return {s: rows.count(s) for s in set(rows)}


def test_429_waits_until_the_reset_time_then_sends(db_url, tmp_path, clock):
    "a 429 with X-RateLimit-Reset 30 s ahead: the sender sleeps past the reset, then the batch goes"
    reset = SLOT.timestamp() + 30
    transport = RecordingTransport(RateLimited("429 too many requests", reset_at=reset))
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 3))
    assert report.sent == 3 and report.rate_limited == 1
    assert clock.slept and 30 <= clock.slept[0] <= 31
    assert clock.now.timestamp() >= reset


class TakenOverWhileWaiting(RecordingTransport):
    """Answers the first batch 429; meanwhile another sender takes its rows over (their lease ran out while this
    one could not reach the database), as a host cut off from the network would find when it comes back."""

    def __init__(self, db_url: str, reset_at: float):
        super().__init__(RateLimited("429 too many requests", reset_at=reset_at))
        self.db_url = db_url

    def taken(self, batch) -> list[int]:
        """The rows of the first batch the other sender takes: all of them."""
        return [r.delivery_id for r in batch.recipients]

    def send(self, batch):
        if self.calls == 0:
            engine = make_engine(self.db_url)
            with session_scope(engine) as session:
                session.execute(update(Delivery).where(Delivery.id.in_(self.taken(batch))).values(lease_owner=OTHER))
            engine.dispose()
        return super().send(batch)


OTHER = "other-host:1:x"


def test_a_batch_taken_over_while_waiting_for_a_retry_is_not_posted_again(db_url, tmp_path, clock):
    "a 429, then the rows are another sender's: the retry does not post them, and they stay the other sender's"
    transport = TakenOverWhileWaiting(db_url, reset_at=SLOT.timestamp() + 5)
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 3))
    assert transport.calls == 1 and transport.batches == []  # refused once, never posted again
    assert report.sent == 0 and any("taken over by another sender" in error for error in report.errors)
    with session_scope(sender.services.engine) as session:
        rows = session.execute(select(Delivery.status, Delivery.lease_owner)).all()
    assert rows == [(DeliveryStatus.sending.value, OTHER)] * 3


class BlockedByAnotherSender(RecordingTransport):
    """Accepts every batch; after the first, another sender is taken to have hit a 429 until ``until``."""

    def __init__(self, engine, until: datetime):
        super().__init__()
        self.engine, self.until = engine, until

    def send(self, batch):
        result = super().send(batch)
        if self.calls == 1:
            with self.engine.begin() as connection:
                block_sending(connection=connection, until=self.until, reason="429 seen elsewhere")
        return result


def test_a_limit_another_sender_records_between_two_batches_holds_the_second(db_url, tmp_path, clock):
    "the shared limit is read with every claim: the next batch waits for a reset recorded after the last one"
    sender = make_sender(db_url, tmp_path, None, clock, batch_size=2)
    inner = BlockedByAnotherSender(sender.services.engine, until=SLOT + timedelta(seconds=60))
    sender.services = dataclasses.replace(sender.services, transport=SharedRateLimit(inner, engine=sender.services.engine, clock=clock, sleep=clock.sleep))
    report = sender.send_issue(issue_with(sender, 4))
    assert report.sent == 4 and inner.calls == 2
    assert clock.slept == [60.0] and sender.services.transport.waits == 1


def test_a_reading_handed_to_the_rate_limit_stands_for_one_send_only(db_url, tmp_path, clock):
    "observe() spares the next send its own read; the send after that reads the row again"
    sender = make_sender(db_url, tmp_path, None, clock)
    limit = SharedRateLimit(RecordingTransport(), engine=sender.services.engine, clock=clock, sleep=clock.sleep)
    with sender.services.engine.connect() as connection:
        limit.observe(connection)  # nothing recorded yet
        connection.rollback()
    with sender.services.engine.begin() as connection:
        block_sending(connection=connection, until=SLOT + timedelta(seconds=30), reason="429")
    limit.wait_if_blocked()
    assert clock.slept == []  # the reading taken before the block
    limit.wait_if_blocked()
    assert clock.slept == [30.0]


def test_server_errors_retry_with_growing_capped_backoff(db_url, tmp_path, clock):
    "two 503s then success: two retries, the second wait twice the first (same jitter), nothing lost"
    transport = RecordingTransport(TransientError("503"), TransientError("503"))
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 2))
    assert report.sent == 2 and report.retries == 2 and report.ambiguous == 0
    assert clock.slept[1] == pytest.approx(2 * clock.slept[0])
    assert statuses(sender.services.engine) == {"sent": 2}


def test_a_permanent_error_fails_the_batch_with_the_providers_message_and_does_not_loop(db_url, tmp_path, clock):
    "a 400 marks the batch failed with SendGrid's words; one request, no retry"
    transport = RecordingTransport(PermanentError("400: personalizations.0.to.0.email: Does not contain a valid address"))
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 2))
    assert transport.calls == 1 and report.failed == 2 and report.sent == 0
    with session_scope(sender.services.engine) as session:
        errors = set(session.execute(select(Delivery.error)).scalars())
    assert errors == {"400: personalizations.0.to.0.email: Does not contain a valid address"}


def test_an_outage_stops_the_run_and_a_rerun_resumes_without_duplicates(db_url, tmp_path, clock):
    "six failures in a row abort the run with rows pending; the next run sends each of them once"
    failing = RecordingTransport(*[TransientError("connection refused")] * 6)
    sender = make_sender(db_url, tmp_path, failing, clock, max_attempts=6)
    issue = issue_with(sender, 3)
    with pytest.raises(SendAborted, match="rerun `digest send`"):
        sender.send_issue(issue)
    assert statuses(sender.services.engine) == {"pending": 3}
    healthy = RecordingTransport()
    report = make_sender(db_url, tmp_path, healthy, clock).send_issue(issue)
    assert report.sent == 3 and len(healthy.recipients) == 3 and report.ambiguous == 0


def test_a_timeout_after_the_request_went_out_resends_and_counts_the_possible_duplicate(db_url, tmp_path, clock):
    "an ambiguous timeout: the batch is sent again and each of its recipients is counted, not silent"
    transport = RecordingTransport(TransientError("timed out", ambiguous=True))
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 4))
    assert report.sent == 4 and report.ambiguous == 4
    with session_scope(sender.services.engine) as session:
        counted = session.execute(select(Delivery.ambiguous_resends)).scalars().all()
    assert counted == [1, 1, 1, 1]


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no handler in the sender catches it."""


class CrashAfterPost(RecordingTransport):
    def send(self, batch):
        result = super().send(batch)
        raise Crash()


def test_a_crash_between_post_and_commit_is_resent_once_after_the_lease_and_counted(db_url, tmp_path, clock):
    "the process dies after SendGrid took the batch: the rows stay leased, the rerun sends them once more"
    crashing = CrashAfterPost()
    sender = make_sender(db_url, tmp_path, crashing, clock)
    issue = issue_with(sender, 3)
    with pytest.raises(Crash):
        sender.send_issue(issue)
    assert statuses(sender.services.engine) == {"sending": 3}
    rerun = RecordingTransport()
    early = make_sender(db_url, tmp_path, rerun, clock).send_issue(issue)
    assert early.sent == 0 and early.remaining == 3, "a live lease is respected"
    clock.now += sender.lease + timedelta(seconds=1)
    late = make_sender(db_url, tmp_path, rerun, clock).send_issue(issue)
    assert late.sent == 3 and late.ambiguous == 3 and len(rerun.recipients) == 3
    assert statuses(sender.services.engine) == {"sent": 3}


def test_a_crash_before_the_post_loses_nobody(db_url, tmp_path, clock):
    "the process dies with a batch leased but never posted: the rerun sends all of it"
    class CrashBeforePost(RecordingTransport):
        def send(self, batch):
            raise Crash()

    sender = make_sender(db_url, tmp_path, CrashBeforePost(), clock)
    issue = issue_with(sender, 5)
    with pytest.raises(Crash):
        sender.send_issue(issue)
    clock.now += sender.lease + timedelta(seconds=1)
    rerun = RecordingTransport()
    report = make_sender(db_url, tmp_path, rerun, clock).send_issue(issue)
    assert sorted(rerun.recipients) == sorted(set(rerun.recipients)) and len(rerun.recipients) == 5
    assert statuses(sender.services.engine) == {"sent": 5}


def test_a_template_error_leaves_the_leased_batch_pending_not_ambiguous(db_url, tmp_path, clock):
    "a template that fails to render: the batch just leased goes back to pending; the fixed rerun sends it once, no duplicate counted"
    import shutil

    from digest.render.email import Renderer
    from digest.render.environment import RenderError, make_environment, templates_dir

    transport = RecordingTransport()
    sender = make_sender(db_url, tmp_path, transport, clock, batch_size=10)
    # Readers who left before: the issue's delivery ids (1-25) are not its readers' ids (6-30).
    add_subscribers(sender.services.engine, 5, status=SubscriberStatus.unsubscribed, prefix="gone")
    issue = issue_with(sender, 25)
    broken = tmp_path / "templates"
    shutil.copytree(templates_dir(), broken)
    (broken / "email" / "digest.mjml.j2").write_text("{% if %}", encoding="utf-8")
    good = sender.services.renderer
    broken_renderer = Renderer(settings=sender.services.settings, links=sender.services.links, env=make_environment(broken))
    sender.services = dataclasses.replace(sender.services, renderer=broken_renderer)

    with pytest.raises(RenderError) as raised:
        sender.send_issue(issue)
    assert statuses(sender.services.engine) == {DeliveryStatus.pending.value: 25} and transport.batches == []
    # The batch given back says why, on its own rows: the first ten the claim took.
    assert [error for _, error, _ in rows(sender.services.engine)] == [f"not rendered: {raised.value}"] * 10 + [None] * 15

    sender.services, sender.rendered = dataclasses.replace(sender.services, renderer=good), {}
    report = sender.send_issue(issue)
    assert statuses(sender.services.engine) == {DeliveryStatus.sent.value: 25}
    assert report.ambiguous == 0 and sum(len(b.recipients) for b in transport.batches) == 25
    sender.services.engine.dispose()


def test_a_render_error_is_kept_to_its_first_thousand_characters_on_each_row_given_back(db_url, tmp_path, clock):
    "a template error with a long message (a missing include named by a long path): each of the batch's rows keeps "
    "1,000 characters of it, not the whole message a thousand times over"
    import shutil

    from digest.render.email import Renderer
    from digest.render.environment import RenderError, make_environment, templates_dir

    sender = make_sender(db_url, tmp_path, RecordingTransport(), clock, batch_size=3)
    issue = issue_with(sender, 3)
    broken = tmp_path / "templates"
    shutil.copytree(templates_dir(), broken)
    missing = "{% include '" + "missing/" * 300 + "part.j2' %}"
    (broken / "email" / "digest.mjml.j2").write_text(missing, encoding="utf-8")
    sender.services = dataclasses.replace(sender.services, renderer=Renderer(
        settings=sender.services.settings, links=sender.services.links, env=make_environment(broken)))

    with pytest.raises(RenderError) as raised:
        sender.send_issue(issue)
    message = f"not rendered: {raised.value}"
    assert len(message) > 2000
    assert [error for _, error, _ in rows(sender.services.engine)] == [message[:1000]] * 3
    sender.services.engine.dispose()


def rows(engine) -> list[tuple]:
    with session_scope(engine) as session:
        return session.execute(select(Delivery.status, Delivery.error, Delivery.ambiguous_resends)
                               .order_by(Delivery.id)).all()


def test_a_429_is_no_sign_of_a_duplicate_and_each_one_is_counted(db_url, tmp_path, clock):
    "two 429s then success: both counted as rate limited, no recipient counted as a possible duplicate"
    reset = SLOT.timestamp() + 5
    transport = RecordingTransport(*[RateLimited("429 too many requests", reset_at=reset)] * 2)
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 3))
    assert report.sent == 3 and report.rate_limited == 2 and report.ambiguous == 0 and report.requests == 3
    assert clock.slept == [pytest.approx(5 + 0.05 + 0.25), pytest.approx(0.05 + 0.25)]  # the reset passed: no wait for it
    assert rows(sender.services.engine) == [(DeliveryStatus.sent.value, None, 0)] * 3


def test_a_429_without_a_reset_time_waits_one_to_two_seconds(db_url, tmp_path, clock):
    "no X-RateLimit-Reset: one second plus up to a second of jitter (0.5 s at jitter 0.5), then the batch"
    transport = RecordingTransport(RateLimited("429 too many requests", reset_at=None))
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 2))
    assert report.sent == 2 and clock.slept == [pytest.approx(1.5)]


def test_a_reset_fifteen_minutes_ahead_is_waited_for(db_url, tmp_path, clock):
    "a reset exactly 900 s ahead is still a rate limit: the sender waits past it and sends"
    transport = RecordingTransport(RateLimited("429 too many requests", reset_at=SLOT.timestamp() + 900))
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 2))
    assert report.sent == 2 and clock.slept == [pytest.approx(900 + 0.05 + 0.25)]


def test_a_reset_further_than_fifteen_minutes_ahead_stops_the_run_with_the_batch_pending(db_url, tmp_path, clock):
    "a reset 901 s ahead is an outage: no wait, the run stops, the batch goes back to pending with the reason"
    transport = RecordingTransport(RateLimited("429 too many requests", reset_at=SLOT.timestamp() + 901))
    sender = make_sender(db_url, tmp_path, transport, clock)
    with pytest.raises(SendAborted, match="rate limited until too far ahead") as stopped:
        sender.send_issue(issue_with(sender, 2))
    why = "rate limited until too far ahead: 429 too many requests"
    assert clock.slept == [] and transport.calls == 1
    assert stopped.value.report.errors == [why] and stopped.value.report.rate_limited == 1
    assert str(stopped.value) == f"sending stopped, {why}. Deliveries left pending; rerun `digest send` to resume."
    assert rows(sender.services.engine) == [(DeliveryStatus.pending.value, why, 0)] * 2


def test_a_hundred_429s_in_a_row_are_waited_out(db_url, tmp_path, clock):
    "RATE_LIMIT_MAX_WAITS: the batch goes after a hundred consecutive 429s"
    transport = RecordingTransport(*[RateLimited("429", reset_at=None)] * 100)
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 2))
    assert report.sent == 2 and report.rate_limited == 100 and len(clock.slept) == 100


def test_the_hundred_and_first_429_in_a_row_stops_the_run_with_the_batch_pending(db_url, tmp_path, clock):
    "a 101st consecutive 429 gives up for this run: the batch is pending again, the reason on its rows"
    transport = RecordingTransport(*[RateLimited("429", reset_at=None)] * 101)
    sender = make_sender(db_url, tmp_path, transport, clock)
    with pytest.raises(SendAborted, match="rate limited 101 times in a row: 429") as stopped:
        sender.send_issue(issue_with(sender, 2))
    assert stopped.value.report.errors == ["rate limited 101 times in a row: 429"] and len(clock.slept) == 100
    assert rows(sender.services.engine) == [(DeliveryStatus.pending.value, "rate limited 101 times in a row: 429", 0)] * 2


def test_each_refused_batch_is_counted_and_named_in_the_report(db_url, tmp_path, clock):
    "two batches of two refused for good: four failed, one error line per batch with the provider's words"
    transport = RecordingTransport(PermanentError("400: bad"), PermanentError("400: worse"))
    sender = make_sender(db_url, tmp_path, transport, clock, batch_size=2)
    report = sender.send_issue(issue_with(sender, 4))
    assert report.failed == 4 and report.sent == 0
    assert report.errors == ["batch of 2 refused: 400: bad", "batch of 2 refused: 400: worse"]


def test_backoff_starts_at_half_a_second_doubles_and_stops_growing_at_a_minute(db_url, tmp_path, clock):
    "nine 503s: 0.5, 1, 2 ... 32 s, then 60 s twice (BACKOFF_CAP), each times 0.75 at jitter 0.5"
    transport = RecordingTransport(*[TransientError("503")] * 9)
    sender = make_sender(db_url, tmp_path, transport, clock, max_attempts=10)
    report = sender.send_issue(issue_with(sender, 2))
    assert report.sent == 2 and report.retries == 9
    assert clock.slept == [pytest.approx(0.75 * s) for s in (0.5, 1, 2, 4, 8, 16, 32, 60, 60)]


def test_each_ambiguous_retry_of_a_batch_counts_its_recipients_again(db_url, tmp_path, clock):
    "two timeouts after the request went out, then success: each recipient may have two extra copies, both counted"
    transport = RecordingTransport(*[TransientError("timed out", ambiguous=True)] * 2)
    sender = make_sender(db_url, tmp_path, transport, clock)
    report = sender.send_issue(issue_with(sender, 3))
    assert report.sent == 3 and report.ambiguous == 6
    assert rows(sender.services.engine) == [(DeliveryStatus.sent.value, None, 2)] * 3


def test_a_reason_stored_on_the_rows_is_clipped_to_a_thousand_characters(db_url, tmp_path, clock):
    "a provider's long message: the refusal and the give-up each keep its first 1000 characters on the rows"
    long = "x" * 2000
    transport = RecordingTransport(PermanentError(long), RateLimited(long, reset_at=SLOT.timestamp() + 3600))
    sender = make_sender(db_url, tmp_path, transport, clock, batch_size=1)
    with pytest.raises(SendAborted):
        sender.send_issue(issue_with(sender, 2))
    refused, given_up = rows(sender.services.engine)
    assert refused == (DeliveryStatus.failed.value, long[:1000], 0)
    assert given_up == (DeliveryStatus.pending.value, f"rate limited until too far ahead: {long}"[:1000], 0)


def test_a_batch_waiting_out_a_429_longer_than_its_lease_is_not_taken_over_meanwhile(db_url, tmp_path, clock):
    "a reset 800 s ahead, leases of 600 s: a second sender running 799 s into the wait takes none of the rows"
    transport = RecordingTransport(RateLimited("429 too many requests", reset_at=SLOT.timestamp() + 800))
    sender = make_sender(db_url, tmp_path, transport, clock)
    issue = issue_with(sender, 3)
    other = RecordingTransport()
    during: list = []

    def sleep(seconds: float) -> None:  # the second sender runs just before the wait ends
        clock.now += timedelta(seconds=seconds - 1)
        during.append(make_sender(db_url, tmp_path, other, clock).send_issue(issue))
        clock.now += timedelta(seconds=1)

    sender.services = dataclasses.replace(sender.services, sleep=sleep)
    report = sender.send_issue(issue)
    assert sender.lease == timedelta(seconds=600)
    assert [r.sent for r in during] == [0] and other.batches == []
    assert report.sent == 3 and len(transport.recipients) == 3 and report.errors == []


class PartlyTakenOverWhileWaiting(TakenOverWhileWaiting):
    """Answers the first batch 429; meanwhile another sender takes over its first row only."""

    def taken(self, batch) -> list[int]:
        return [batch.recipients[0].delivery_id]


def test_a_batch_partly_taken_over_while_waiting_gives_back_the_rest_and_says_how_many(db_url, tmp_path, clock):
    "a 429, then one of three rows is another sender's: none is posted; the two still ours are pending again"
    transport = PartlyTakenOverWhileWaiting(db_url, reset_at=SLOT.timestamp() + 5)
    sender = make_sender(db_url, tmp_path, transport, clock, batch_size=3)
    issue = issue_with(sender, 3)
    sender.should_stop = lambda: transport.calls > 0  # one claim: the released rows are not claimed again here
    report = sender.send_issue(issue)
    assert transport.batches == [] and report.errors == [
        "1 of the batch's 3 recipients were taken over by another sender while this one waited: not posted again"]
    with session_scope(sender.services.engine) as session:
        rows = session.execute(select(Delivery.status, Delivery.lease_owner).order_by(Delivery.id)).all()
    assert rows == [(DeliveryStatus.sending.value, OTHER)] + [(DeliveryStatus.pending.value, None)] * 2


def test_a_retry_after_a_503_waits_for_a_limit_another_sender_recorded_during_the_backoff(db_url, tmp_path, clock):
    "the shared limit is read again once the backoff is over: a 429 seen elsewhere meanwhile holds the retry"
    sender = make_sender(db_url, tmp_path, None, clock)
    inner = RecordingTransport(TransientError("503"))
    limit = SharedRateLimit(inner, engine=sender.services.engine, clock=clock, sleep=clock.sleep)

    def backoff(seconds: float) -> None:
        clock.sleep(seconds)
        with sender.services.engine.begin() as connection:
            block_sending(connection=connection, until=clock.now + timedelta(seconds=60), reason="429 seen elsewhere")

    sender.services = dataclasses.replace(sender.services, transport=limit, sleep=backoff)
    report = sender.send_issue(issue_with(sender, 2))
    assert report.sent == 2 and inner.calls == 2 and limit.waits == 1
    assert clock.slept == [pytest.approx(0.375), 60.0]


def test_a_sender_that_dies_waiting_out_a_429_leaves_its_batch_to_a_rerun_once_the_lease_ends(db_url, tmp_path, clock):
    "the process dies during a 429's wait: its rows stay leased, with an end, and a later run sends each once"
    transport = RecordingTransport(RateLimited("429 too many requests", reset_at=SLOT.timestamp() + 5))
    sender = make_sender(db_url, tmp_path, transport, clock)
    issue = issue_with(sender, 3)

    def die(seconds: float) -> None:
        raise Crash()

    sender.services = dataclasses.replace(sender.services, sleep=die)
    with pytest.raises(Crash):
        sender.send_issue(issue)
    assert statuses(sender.services.engine) == {"sending": 3}
    clock.now += sender.lease + timedelta(seconds=10)
    rerun = RecordingTransport()
    report = make_sender(db_url, tmp_path, rerun, clock).send_issue(issue)
    assert report.sent == 3 and len(rerun.recipients) == 3
    assert statuses(sender.services.engine) == {"sent": 3}


def test_possible_duplicates_of_an_early_batch_stay_counted_when_later_batches_go_cleanly(db_url, tmp_path, clock):
    "an ambiguous timeout on the first of two batches: the run's report still counts its two recipients at the end"
    transport = RecordingTransport(TransientError("timed out", ambiguous=True))
    sender = make_sender(db_url, tmp_path, transport, clock, batch_size=2)
    report = sender.send_issue(issue_with(sender, 4))
    assert report.sent == 4 and report.batches == 2 and report.ambiguous == 2


def test_the_run_reports_how_long_it_took(db_url, tmp_path, clock):
    "the seconds `digest send` prints are the run's own: more than nothing, less than a minute for three readers"
    sender = make_sender(db_url, tmp_path, RecordingTransport(), clock)
    report = sender.send_issue(issue_with(sender, 3))
    assert report.sent == 3 and 0 < report.seconds < 60
