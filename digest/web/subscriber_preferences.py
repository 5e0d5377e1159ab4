"""The preference centre, `GET/POST /p/{token}`: categories, time zone and cadence, pause, unsubscribe or
resubscribe, export, delete.

Every form on the page POSTs here with an `action` and the CSRF field. A successful change answers 303
to `GET /p/{token}?saved=ACTION` (Post/Redirect/Get), which shows what was done in a role="status"
element; the download answers with the JSON file itself; a deletion goes to `/p/-/deleted`, since the
token names nobody any more.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from digest.subscribers import subscriptions
from digest.subscribers.zones import UnknownZone, checked_zone, choices as zone_choices
from digest.categories import followable, stored_categories
from digest.claim.selection import category_key, followed
from digest.web.context import TOKEN_PAGE_HEADERS, WebContext, get_context
from digest.web.keep import resume_offer
from digest.web.subscriber_common import (
    LinkRoute, SubscriberFromToken, SubscriberLink, csrf_refused, csrf_valid, long_date, see_other, status_of,
)
from storage.catalog import category_counts
from storage.models import Cadence, Subscriber

router = APIRouter(route_class=LinkRoute)

EXPORT_FILENAME = "weekly-ai-tool-verdicts-my-data.json"
CADENCES = {Cadence.weekly: "Weekly: every issue",
            Cadence.monthly: "Monthly: once a month, the month's best verdicts you haven't seen"}


@dataclass(frozen=True)
class CategoryChoice:
    key: str  # category_key: what is stored
    name: str  # the spelling shown
    checked: bool


@dataclass(frozen=True)
class Change:
    """One POST of the preference centre's forms: whose, what it said, and when."""

    ctx: WebContext
    request: Request
    link: SubscriberLink
    category: list[str]
    weeks: str
    confirm: str
    now: datetime
    timezone: str = ""
    cadence: str = ""

    def again(self, error: str, status_code: int = 400) -> Response:
        """The page again, saying what was wrong; nothing was changed."""
        return _render(self.ctx, self.request, self.link, error=error, status_code=status_code)


@router.get("/p/-/deleted")
def deleted_page(ctx: WebContext = Depends(get_context)) -> Response:
    return ctx.page("preferences_deleted.html", token_page=True)


@router.get("/p/{token}")
def preferences_page(link: SubscriberFromToken, request: Request, saved: str = "",
                     ctx: WebContext = Depends(get_context)) -> Response:
    return _render(ctx, request, link, saved=saved)


@router.post("/p/{token}")
def preferences_post(
    link: SubscriberFromToken,
    request: Request,
    action: Annotated[str, Form()] = "",
    category: Annotated[list[str], Form()] = [],  # noqa: B006 — FastAPI copies defaults per request
    weeks: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
    timezone: Annotated[str, Form()] = "",
    cadence: Annotated[str, Form()] = "",
    csrf: Annotated[str | None, Form()] = None,
    ctx: WebContext = Depends(get_context),
) -> Response:
    """A token naming nobody got the one 404 before the CSRF check, whatever else the request holds."""
    change = Change(ctx=ctx, request=request, link=link, category=category, weeks=weeks, confirm=confirm,
                    now=ctx.clock(), timezone=timezone, cadence=cadence)
    if not csrf_valid(ctx, request, csrf):
        return csrf_refused(ctx)
    act = ACTIONS.get(action)
    if act is None:
        return change.again("That request was not understood.")
    answer = act(change)
    # Done: the page says what was done; the change commits before this response leaves.
    return answer if answer is not None else see_other(f"/p/{link.token}?saved={action}")


# -- what each form does: None when done (the page then says so), else the answer ---------------------------------

def _categories(change: Change) -> None:
    allowed = {choice.key for choice in _choices(change.link)}  # each passed digest.categories' rule
    chosen = stored_categories(name for name in change.category if category_key(name) in allowed)
    subscriptions.set_categories(session=change.link.session, subscriber=change.link.subscriber, categories=chosen,
                                 now=change.now)


def _timing(change: Change) -> Response | None:
    """The zone must be one the page offers (or the reader's own, which an import may have set to a name the
    list leaves out, such as "US/Pacific"): anything else was not sent by our form, and nothing is stored."""
    subscriber = change.link.subscriber
    try:
        zone = checked_zone(change.timezone)
        if zone is not None and zone not in zone_choices() and zone != subscriber.timezone:
            raise UnknownZone(zone)
    except UnknownZone:
        return change.again("Choose your time zone from the list, or the newsletter's time.")
    try:
        cadence = Cadence(change.cadence)
    except ValueError:
        return change.again("Choose weekly or monthly.")
    subscriptions.set_timing(session=change.link.session, subscriber=subscriber, timezone=zone, cadence=cadence,
                             now=change.now)
    return None


def _pause(change: Change) -> Response | None:
    if status_of(change.link.subscriber) != "active":
        return change.again("Only an active subscription can be paused.", 409)
    try:
        subscriptions.pause(session=change.link.session, subscriber=change.link.subscriber,
                            weeks=int(change.weeks or 0), now=change.now)
    except ValueError:
        return change.again("Choose how long to pause: 1, 2, 4 or 8 weeks.")
    return None


def _resume(change: Change) -> None:
    subscriptions.resume(session=change.link.session, subscriber=change.link.subscriber, now=change.now)


def _unsubscribe(change: Change) -> None:
    subscriptions.unsubscribe(session=change.link.session, subscriber=change.link.subscriber, source="web",
                              now=change.now, detail="preference centre")


def _resubscribe(change: Change) -> Response | None:
    subscriber = change.link.subscriber
    if not subscriptions.resubscribe(session=change.link.session, subscriber=subscriber, source="web", now=change.now):
        return change.again(_cannot_resubscribe(status_of(subscriber)), 409)
    return None


def _export(change: Change) -> Response:
    data = subscriptions.export_data(session=change.link.session, subscriber=change.link.subscriber)
    headers = {**TOKEN_PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"'}
    return Response(json.dumps(data, indent=2, ensure_ascii=False), media_type="application/json",
                    headers=headers)


def _delete(change: Change) -> Response:
    if change.confirm != "yes":
        return change.again("Nothing was deleted: tick the box to confirm, then press “Delete my data”.")
    subscriptions.forget(session=change.link.session, subscriber=change.link.subscriber, now=change.now)
    return see_other("/p/-/deleted")  # the token names nobody any more


ACTIONS: dict[str, Callable[[Change], Response | None]] = {
    "categories": _categories, "timing": _timing, "pause": _pause, "resume": _resume, "unsubscribe": _unsubscribe,
    "resubscribe": _resubscribe, "export": _export, "delete": _delete,
}


# -- the page ---------------------------------------------------------------------------------------------------

def _render(ctx: WebContext, request: Request, link: SubscriberLink, *, saved: str = "", error: str = "",
            status_code: int = 200) -> Response:
    subscriber = link.subscriber
    status = status_of(subscriber)
    paused = subscriber.paused_until if subscriber.paused_until and subscriber.paused_until > ctx.clock() else None
    choices = _choices(link)
    return ctx.form_page(
        request, "preferences.html", status_code=status_code, token=link.token, email=subscriber.email,
        status=status, choices=choices, paused_until=long_date(ctx, paused) if paused else "",
        message=_message(saved, status, choices, paused is not None) or _timing_message(saved, ctx, subscriber),
        error=error, pause_weeks=subscriptions.PAUSE_WEEKS, **_timing_choices(ctx, subscriber),
        **resume_offer(ctx, link),
    )


def _timing_choices(ctx: WebContext, subscriber: Subscriber) -> dict:
    """The time zone select's options as (value, label, selected), the newsletter's own first as ""; the cadences."""
    mine = subscriber.timezone or ""
    zones = sorted({*zone_choices(), mine} - {""})  # the reader's own stays offered, even one the list leaves out
    return {
        "zones": [("", f"The newsletter's time ({ctx.settings.timezone})", not mine),
                  *((zone, zone.replace("_", " "), zone == mine) for zone in zones)],
        "cadences": [(cadence.value, label, cadence == Cadence(subscriber.cadence))
                     for cadence, label in CADENCES.items()],
        "monthly": Cadence(subscriber.cadence) == Cadence.monthly,
    }


def _timing_message(saved: str, ctx: WebContext, subscriber: Subscriber) -> str:
    if saved != "timing":
        return ""
    how = ("one email a month, the month's best verdicts you haven't seen"
           if Cadence(subscriber.cadence) == Cadence.monthly else "one email a week")
    zone = subscriber.timezone or f"the newsletter's time ({ctx.settings.timezone})"
    return f"Saved. You will get {how}, timed for {zone}."


def _choices(link: SubscriberLink) -> list[CategoryChoice]:
    """The categories in the store, in their most common spelling, plus any the subscriber follows that
    no comparison has yet (kept, so saving the form does not silently drop them).

    Only names the comparison contract accepts (digest.categories): a comparison imported before it
    forbade ``;`` may be filed under "AI; Agents", and following that would store "ai" and "agents".
    Such a comparison still reaches everyone who follows every category. A stored string written by the
    old form ("ai; agents") is read the way the fan-out reads it: as "ai" and "agents".
    """
    counts: dict[str, dict[str, int]] = {}
    for name, count in category_counts(session=link.session):
        if followable(name):
            spellings = counts.setdefault(category_key(name), {})
            spellings[name.strip()] = spellings.get(name.strip(), 0) + count
    names = {key: min(spellings, key=lambda s: (-spellings[s], s)) for key, spellings in counts.items() if key}
    mine = {category_key(key) for key in followed(link.subscriber.categories)}
    mine = {key for key in mine if followable(key)}
    for key in mine - names.keys():
        names[key] = key
    return sorted((CategoryChoice(key=key, name=name, checked=key in mine) for key, name in names.items()),
                  key=lambda choice: choice.name.casefold())


def _message(saved: str, status: str, choices: list[CategoryChoice], paused: bool) -> str:
    """What the last change did, in words, from the state now stored (a reload shows the same)."""
    if saved == "categories":
        picked = [choice.name for choice in choices if choice.checked]
        return f"Saved. You will get: {', '.join(picked)}." if picked else "Saved. You will get every category."
    if saved == "pause" and paused:
        return "Paused. You will get no email until the date shown below."
    if saved == "resume" and not paused:
        return "Resumed. You will get the next issue."
    if saved == "unsubscribe" and status == "unsubscribed":
        return "You are unsubscribed from everything. You will get no more emails from us."
    if saved == "resubscribe" and status == "active":
        return "Welcome back: you are subscribed again."
    return ""


def _cannot_resubscribe(status: str) -> str:
    if status in ("bounced", "complained"):
        return ("Sorry, we cannot resubscribe this address from here: " + (
            "emails to it bounced" if status == "bounced" else "an email to it was reported as spam")
            + ", so we stopped sending to it for good. If you think this is a mistake, reply to any of our "
              "emails and we will look into it.")
    return "You are already subscribed."
