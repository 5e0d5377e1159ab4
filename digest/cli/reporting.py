"""What `digest send`, `digest send --dry-run` and `digest demo` print."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from digest.render.email import HTML_BUDGET

if TYPE_CHECKING:  # the dry run's module is loaded by the dry run only: `digest send` paid 0.2-0.5 s for it
    from digest.editor.dry_run import DryRun


def print_run(console: Console, result, reports) -> None:
    if result is not None and result.reason:
        console.print(result.reason)
    if result is not None and result.opened and result.opened.created:
        console.print(f"opened issue {result.week}: {result.opened.claimed} comparisons claimed, "
                      f"{result.opened.deliveries} recipients"
                      + (f"; {result.opened.unmatched} subscribers follow none of its categories and get nothing"
                         if result.opened.unmatched else ""))
    for report in reports:
        console.print(
            f"issue {report.week}: {report.segments} segments, {report.recipients} recipients; this run sent "
            f"{report.sent} in {report.batches} batches ({report.requests} requests, {report.retries} retries, "
            f"{report.rate_limited} rate-limited waits), {report.failed} failed, {report.cancelled} cancelled, "
            f"{report.remaining} left, in {report.seconds:.2f} s",
            highlight=False,
        )
        if report.timing():
            console.print(f"  {report.timing()}", highlight=False, markup=False)
        if report.ambiguous:
            console.print(f"  {report.ambiguous} recipients were handed over again after an unknown outcome "
                          "(a timeout or a crash after the request went out): they may get two copies",
                          style="yellow")
        if report.halted and report.halted.startswith("warm-up:"):  # paused/cancelled: said below, with `held`
            console.print(f"  {report.halted}", highlight=False, markup=False)
        for error in report.errors:
            console.print(f"  error: {error}", style="red", highlight=False, markup=False)
    for line in (result.held.values() if result is not None else ()):  # paused or cancelled: not sent (issue 18)
        console.print(line, style="yellow", highlight=False, markup=False)
    if result is not None and not reports and not result.reason and not result.held:
        console.print("nothing to send")


def print_dry_run(console: Console, plan: DryRun, *, tz) -> None:
    from digest.editor.dry_run import state_sentence

    if plan.feed is not None:  # first: what the issue would claim depends on what the feed brought
        console.print(plan.feed.sentence(tz=tz), highlight=False, markup=False)
    halted = state_sentence(plan)  # paused (why, what a resume would send) or cancelled: issue 18
    if halted is not None:
        console.print(halted, highlight=False, markup=False)
        if plan.state.name == "cancelled":
            return
    if plan.sent:
        console.print(sent_sentence(plan, tz=tz), highlight=False, markup=False)
        return
    state = "already opened" if plan.exists else "not opened yet; sending now would claim"
    console.print(f"[bold]issue {plan.week}[/] ({state}): {len(plan.titles)} comparisons")
    if not plan.titles:
        console.print("no new comparison since the last issue: nothing would be sent")
        return
    for number, title in enumerate(plan.titles, 1):
        console.print(f"  {number}. {title}", highlight=False, markup=False)
    table = Table(title="segments (rendered once each)")
    for column in ("audience", "recipients", "comparisons", "subject", "HTML"):
        table.add_column(column)
    for segment in plan.segments:
        size = f"{segment.html_bytes / 1024:.1f} KB / {HTML_BUDGET // 1024} KB"
        if segment.html_bytes > HTML_BUDGET:
            size += " OVER BUDGET"
        more = len(segment.titles) - segment.shown
        table.add_row(segment.audience, str(segment.recipients),
                      f"{segment.shown} shown" + (f" + {more} more" if more else ""), segment.subject, size)
    console.print(table)
    total = sum(segment.recipients for segment in plan.segments)
    console.print(f"{total} recipients in {len(plan.segments)} segments")
    if plan.changes:
        console.print(f"verdicts that changed, for the {plan.changes.readers} readers who got them "
                      "(those this issue reaches):", highlight=False)
        for line in plan.changes.lines:
            console.print(f"  {line}", highlight=False, markup=False)
    if plan.nothing:
        _print_left_out(console, plan, tz=tz)


def _print_left_out(console: Console, plan: DryRun, *, tz) -> None:
    """The first people who get nothing, each with the reason, then the count per reason."""
    from digest.editor.dry_run import reason_text

    total = sum(plan.nothing.values())
    console.print(f"get nothing: {total}" + (f" (the first {len(plan.left_out)}; --json lists all)"
                                              if total > len(plan.left_out) else ""), highlight=False)
    for person in plan.left_out:
        console.print(f"  {person.email}: {reason_text(person, tz=tz)}", highlight=False, markup=False)
    console.print("  by reason: " + ", ".join(f"{count} {reason}" for reason, count in plan.nothing.items()),
                  highlight=False, markup=False)


def sent_sentence(plan: DryRun, *, tz) -> str:
    """ "issue 2026-W48 was sent on Mon 23 Nov 2026 to 38 readers: nothing to dry-run; …" """
    sent, week = plan.sent, plan.week
    stats = f"`digest stats --week {week}` shows how it did"
    if not sent.readers:
        closed = sent.closed_at.astimezone(tz)
        return f"issue {week} was closed on {closed:%a %d %b %Y} with nobody to send to: nothing to dry-run"
    when = f"{(sent.first_sent_at or sent.closed_at).astimezone(tz):%a %d %b %Y}"
    if sent.to_send:
        # While paused, `digest send` sends nothing: the line above the sentence says what lifts the pause.
        finishes = "" if plan.state is not None and plan.state.halts else "`digest send` finishes it, "
        return (f"issue {week} was sent on {when} to {sent.readers} readers, {sent.to_send} still to send: "
                f"nothing to dry-run; {finishes}{stats}")
    return f"issue {week} was sent on {when} to {sent.readers} readers: nothing to dry-run; {stats}"
