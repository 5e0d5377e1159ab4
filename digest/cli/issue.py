"""`digest issue pause|resume|cancel WEEK`: an operator's hand on an issue's send (issue 18).

The state lives in storage.issue_state, which every sender and worker reads before each batch; here, the week,
the confirmation and the words. Every change is logged (logger "digest.issue", on stderr) with who made it.
Nothing heavy is imported until a command runs (tests/test_cli_help.py).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Annotated, Optional

import typer

from digest.cli.shared import checked_issue_label, console, engine_for, fail, settings_for_run, utcnow

log = logging.getLogger("digest.issue")
BY_HAND = "paused by hand"  # the reason stored for a pause without --reason; the guardrail writes "guardrail: …"


def _checked_week(value: str) -> str:
    """WEEK as the store names weeks ("2026-w9" is 2026-W09), as `digest send --week` reads it, or a monthly
    issue's label ("2026-M12", issue 19); else exit 2."""
    return checked_issue_label(value, "WEEK")


WEEK = typer.Argument(metavar="WEEK", help="the issue's ISO week, e.g. 2026-W48 (a monthly issue: 2026-M12)",
                      callback=_checked_week,
                      show_default=False)


def pause(
    week: Annotated[str, WEEK],
    reason: Annotated[Optional[str], typer.Option("--reason", metavar="TEXT", help="why, stored and shown with the pause")] = None,
) -> None:
    """Pause an issue's send: no sender or worker starts another batch of it until `digest issue resume`.

    The batch in flight finishes (a pause takes effect within one batch on every sender and worker); nothing
    already sent changes. The reason ("paused by hand", or "paused by hand: TEXT") is stored and shown by
    `digest send`, `digest stats`, the dry run and the preview. The scheduler never resumes an issue by itself.
    With DIGEST_DELIVERY=local, what SendGrid holds for its readers' hour is paused there too (until 10 minutes
    before each batch's time), and `digest issue resume` releases it.

    Exit 0 when the issue is paused (or was already: nothing changes), 1 when it is finished or cancelled (nothing
    to pause), 2 when there is no issue for WEEK.

    \b
    Example:
      digest issue pause 2026-W48 --reason "wrong price for Quill"
    """
    from storage.issue_state import pause_issue

    from digest.send.held import NOTICE
    from storage.issue_state import held

    why = f"{BY_HAND}: {reason.strip()}" if reason and reason.strip() else BY_HAND
    settings = settings_for_run(need_secrets=False)
    engine = engine_for(settings)
    with _issue(engine, week) as (session, issue):
        state = _state(issue)
        holding = issue.provider_hold is None and held(session=session, issue_id=issue.id, now=utcnow() + NOTICE)[0]
        if state.name == "cancelled" or (state.name == "done" and not holding):
            raise fail(f"issue {week} {_finished(state)}: nothing to pause")
        paused = state.name != "done" and pause_issue(session=session, issue_id=issue.id, reason=why, now=utcnow())
        left = _left(session, issue.id)
    if paused:
        _log(f"issue {week} paused by hand ({_who()}): {why}")
        console.print(f"issue {week} paused ({why}): {left} deliveries wait; no sender starts another batch of it "
                      f"(the one in flight finishes). `digest issue resume {week}` lifts the pause", highlight=False,
                      markup=False)
    elif not holding:
        console.print(f"{_state(issue).sentence(week)} (already; nothing changed)", highlight=False, markup=False)
    if holding:  # handed over to be delivered at their readers' hour (DIGEST_DELIVERY=local): held back there too
        _provider(settings, engine, week, "pause")


def resume(week: Annotated[str, WEEK]) -> None:
    """Lift an issue's pause: its deliveries left go out with the next send, each recipient's once.

    This sends nothing itself: `digest send --week WEEK` sends the rest now, and so do a running `digest worker`
    and the scheduler's next catch-up (within the hour).

    Exit 0 when the issue may send afterwards (also when it was not paused: nothing changes), 1 when it is
    cancelled (a cancel is final), 2 when there is no issue for WEEK.

    \b
    Example:
      digest issue resume 2026-W48
    """
    from storage.issue_state import resume_issue

    settings = settings_for_run(need_secrets=False)
    engine = engine_for(settings)
    with _issue(engine, week) as (session, issue):
        was = _state(issue)
        if was.name == "cancelled":
            raise fail(f"issue {week} {_finished(was)}: a cancelled issue cannot be resumed")
        resumed = resume_issue(session=session, issue_id=issue.id, now=utcnow())
        left = _left(session, issue.id)
        held_back = issue.provider_hold == "pause"
    if resumed:
        _log(f"issue {week} resumed by hand ({_who()}); it was paused since {_utc(was.since)}: {was.reason}")
        console.print(f"issue {week} resumed (paused since {_utc(was.since)}: {was.reason}): {left} deliveries left; "
                      f"`digest send --week {week}` sends them now, as do a running worker and the scheduler's next "
                      "catch-up", highlight=False, markup=False)
    elif not held_back:
        console.print(f"issue {week} is not paused (it is {was.name}): nothing to resume", highlight=False)
    if held_back:  # what the provider holds for its readers' hour (DIGEST_DELIVERY=local) goes out again
        _provider(settings, engine, week, "release")


def cancel(
    week: Annotated[str, WEEK],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
) -> None:
    """Cancel an issue for good: its pending deliveries become cancelled and never go out.

    Nothing already sent changes; a batch in flight finishes and counts as sent. Says first how many pending
    deliveries would be cancelled and asks (--yes: does not ask), then how many were. A cancelled issue is
    finished and cannot be resumed; `digest stats` counts it as cancelled.

    With DIGEST_DELIVERY=local, what SendGrid holds until its readers' hour is cancelled there too, while SendGrid
    still can (until 10 minutes before each batch's time); if it cannot be reached, run the command again.

    Exit 0 when the issue is cancelled (or was already), 1 when it is finished (nothing pending) or the answer is
    no, 2 when there is no issue for WEEK.

    \b
    Example:
      digest issue cancel 2026-W48 --yes
    """
    from digest.send.held import NOTICE
    from storage.issue_state import held

    settings = settings_for_run(need_secrets=False)
    engine = engine_for(settings)
    with _issue(engine, week) as (session, issue):
        state, counts = _state(issue), _counts(session, issue.id)
        waiting, until = held(session=session, issue_id=issue.id, now=utcnow() + NOTICE)
        waiting = 0 if issue.provider_hold == "cancel" else waiting
    if state.name in ("done", "cancelled") and not waiting:
        if state.name == "cancelled":
            console.print(f"{state.sentence(week)} (already; nothing changed)", highlight=False, markup=False)
            return
        raise fail(f"issue {week} {_finished(state)}: nothing to cancel")
    if state.name != "cancelled":
        kept = f"{counts['sent'] - waiting} already sent stay sent"
        if waiting:
            kept += f"; {waiting} the provider holds until their readers' hour (up to {_utc(until)}) are called back"
        console.print(f"issue {week}: {counts['pending']} pending deliveries would be cancelled; {kept}",
                      highlight=False)
        if not yes and not _confirmed(f"Cancel issue {week}?"):
            raise fail(f"issue {week} not cancelled: nothing changed")
        _cancel(engine, week)
    if waiting:
        _provider(settings, engine, week, "cancel")


def _provider(settings, engine, week: str, action: str) -> None:
    """Tell the provider to pause, cancel or release what it holds of the issue for its readers' hour
    (DIGEST_DELIVERY=local: digest.send.held), and say what came of it. A provider that cannot be reached: exit 1,
    and the same command asks again."""
    from digest.send.held import hold
    from digest.transports import make_transport
    from digest.transports.base import PermanentError, TransientError

    with _issue(engine, week) as (session, issue):
        issue_id = issue.id
    transport = make_transport(settings)
    try:
        done = hold(engine=engine, transport=transport, issue_id=issue_id, action=action, now=utcnow())
    except (TransientError, PermanentError) as exc:
        _log(f"issue {week}: could not {action} what {transport.name} holds: {exc}")
        raise fail(f"issue {week}: {transport.name} was not told to {action} the sends it holds ({exc}); run the "
                   "same command again to retry")
    finally:
        transport.close()
    if done.action:
        _log(done.sentence(week))
        console.print(done.sentence(week), highlight=False, markup=False)


def _cancel(engine, week: str) -> None:
    from storage.issue_state import cancel_issue

    with _issue(engine, week) as (session, issue):
        cancelled = cancel_issue(session=session, issue_id=issue.id, now=utcnow())
        counts = _counts(session, issue.id)
    if cancelled is None:  # cancelled by someone else since the question
        console.print(f"{_state(issue).sentence(week)} (already; nothing changed)", highlight=False, markup=False)
        return
    _log(f"issue {week} cancelled by hand ({_who()}): {cancelled} pending deliveries cancelled")
    flight = f"; {counts['sending']} in flight finish" if counts["sending"] else ""
    console.print(f"issue {week} cancelled: {cancelled} pending deliveries cancelled, never to be sent; nothing "
                  f"sent changes ({counts['sent']} sent{flight})", highlight=False)


# -- helpers ---------------------------------------------------------------------------------------------------

@contextmanager
def _issue(engine, week: str):
    """``with _issue(engine, week) as (session, issue)``: one transaction on the issue of ``week``; none is exit 2."""
    from storage.db import session_scope
    from storage.issues import find_issue

    with session_scope(engine) as session:
        issue = find_issue(session=session, week=week)
        if issue is None:
            raise fail(f"no issue for week {week}: `digest stats` lists the issues", 2)
        yield session, issue


def _state(issue):
    from digest.track.stats import IssueState

    return IssueState.of(created_at=issue.created_at, completed_at=issue.completed_at, paused_at=issue.paused_at,
                         pause_reason=issue.pause_reason, cancelled_at=issue.cancelled_at)


def _counts(session, issue_id: int) -> dict[str, int]:
    """The issue's deliveries by status, every status named (0 when none)."""
    from storage.deliveries import status_counts
    from storage.models import DeliveryStatus

    counts = status_counts(session=session, issue_id=issue_id)
    return {status.value: counts.get(status.value, 0) for status in DeliveryStatus}


def _left(session, issue_id: int) -> int:
    counts = _counts(session, issue_id)
    return counts["pending"] + counts["sending"]


def _finished(state) -> str:
    if state.name == "cancelled":
        return f"was cancelled on {_utc(state.since)}"
    return f"is finished: every delivery went out or failed by {_utc(state.since)}"


def _utc(moment) -> str:
    from digest.track.stats import utc

    return utc(moment) if moment is not None else "?"


def _confirmed(question: str) -> bool:
    try:
        return typer.confirm(question, default=False)
    except typer.Abort:  # no answer (stdin closed): not a yes
        return False


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no login name in a bare container: still say it was by hand
        return "unknown user"


def _log(message: str) -> None:
    """The change, timestamped on stderr (and wherever logging is sent), for whoever looks back at the send."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.info("%s", message)
