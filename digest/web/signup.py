"""Signup with double opt-in: `GET/POST /subscribe` (form and JSON), `GET/POST /confirm/{token}`.

No enumeration: every accepted signup gets the same answer, byte for byte, whether the address is new,
pending, active, unsubscribed or suppressed; what differs (which email, if any) happens in a background
task after the response is sent, so neither the body nor the timing tells. The rate limits count per
address and per client, whoever owns the address, so a 429 tells nothing either.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import func, select, text
from sqlmodel import Session

from digest import confirmation
from digest.confirmation import ConfirmTokens, SignupRequest
from digest.importing import InvalidAddress, normalize_address
from digest.links import BadToken
from digest.render import make_environment
from digest.categories import followable
from digest.selection import canonical_categories, category_key
from digest.send import clean_name
from digest.subscriptions import record_event
from digest.web.context import WebContext, get_context
from digest.web.security import CSRF_FIELD, csrf_field, csrf_ok
from storage.db import session_scope
from storage.models import Comparison, Event

router = APIRouter()

RATE_WINDOW = timedelta(hours=1)
MAX_BODY = 16 * 1024  # an address, a name and a few categories; anything bigger is not a signup
MAX_CATEGORIES = 100
SENT_MESSAGE = ("Thanks! If that address can receive our emails, a message is on its way to it. "
                "Open it and confirm to start getting Weekly AI Tool Verdicts.")
LIMITED_MESSAGE = "Too many signups from here or for this address in the last hour. Please try again in an hour."
NO_STORE = {"Cache-Control": "no-store"}


class SignupError(Exception):
    """A request we cannot take; ``status`` and a message that says what to change (and nothing about others)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Submitted:
    email: str
    name: str
    categories: list[str]
    is_json: bool


# -- the form -------------------------------------------------------------------------------------------------

@router.get("/subscribe")
def subscribe_form(request: Request, ctx: WebContext = Depends(get_context)) -> Response:
    return _form_page(request, ctx)


def _form_page(request: Request, ctx: WebContext, *, status_code: int = 200, error: str = "",
               values: Submitted | None = None) -> Response:
    cookies = Response()
    token = csrf_field(request, cookies, ctx.settings.secret_key, secure=ctx.settings.base_url.startswith("https:"))
    chosen = {category_key(name) for name in values.categories} if values else set()
    page = ctx.page("subscribe.html", status_code=status_code, csrf_name=CSRF_FIELD, csrf=token, error=error,
                    email=values.email if values else "", reader_name=values.name if values else "",
                    categories=[(name, category_key(name) in chosen) for name in _known_categories(ctx).values()])
    page.headers.update(NO_STORE)
    for cookie in cookies.headers.getlist("set-cookie"):
        page.headers.append("set-cookie", cookie)
    return page


def _known_categories(ctx: WebContext) -> dict[str, str]:
    """Category key → its name as the site writes it, for the categories of the comparisons in the store
    that the comparison contract accepts (digest.categories.followable: none from before it forbade ;)."""
    with session_scope(ctx.engine) as session:
        names = session.execute(select(Comparison.category).distinct()).scalars().all()
    known: dict[str, str] = {}
    for name in sorted(filter(followable, names), key=category_key):
        known.setdefault(category_key(name), " ".join(name.split()))
    return {key: known[key] for key in sorted(known) if key}


# -- the signup -----------------------------------------------------------------------------------------------

@router.post("/subscribe")
async def subscribe(request: Request, background: BackgroundTasks, ctx: WebContext = Depends(get_context)) -> Response:
    try:
        submitted = await _read(request, ctx)
    except SignupError as exc:
        if _wants_json(request):
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=NO_STORE)
        return ctx.page("error.html", status_code=exc.status, message=exc.message)
    try:
        signup = _validated(submitted, ctx)
    except SignupError as exc:
        if submitted.is_json:
            return JSONResponse({"error": exc.message}, status_code=exc.status, headers=NO_STORE)
        return _form_page(request, ctx, status_code=exc.status, error=exc.message, values=submitted)
    client = request.client.host if request.client else "unknown"
    accepted, outgoing = _record(ctx, signup, client)
    if not accepted:
        headers = {**NO_STORE, "Retry-After": str(int(RATE_WINDOW.total_seconds()))}
        if submitted.is_json:
            return JSONResponse({"error": LIMITED_MESSAGE}, status_code=429, headers=headers)
        return _with(ctx.page("subscribe_limited.html", status_code=429, message=LIMITED_MESSAGE), headers)
    if outgoing is not None:
        background.add_task(confirmation.send, transport=ctx.transport, env=_email_environment(),
                            settings=ctx.settings, outgoing=outgoing)
    if submitted.is_json:
        return JSONResponse({"status": "ok", "message": SENT_MESSAGE}, status_code=202, headers=NO_STORE)
    return _with(ctx.page("subscribe_sent.html", message=SENT_MESSAGE), NO_STORE)


def _wants_json(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip().lower() == "application/json"


async def _read(request: Request, ctx: WebContext) -> Submitted:
    body = await request.body()  # Starlette keeps it: request.form() below parses the same bytes
    if len(body) > MAX_BODY:
        raise SignupError(413, "That request is too large for a signup.")
    if _wants_json(request):
        # No CSRF check for JSON, on purpose: a browser cannot send Content-Type application/json to another
        # site without a CORS preflight, and this app answers no preflight (no CORS at all), so a JSON post
        # can only come from our own pages or from a non-browser client, which has no cookies to abuse.
        return _from_json(request, body)
    form = await request.form()
    if not csrf_ok(request, form.get(CSRF_FIELD), ctx.settings.secret_key):
        raise SignupError(403, "This form has expired or was sent from another site. Reload the page and try again.")
    return Submitted(email=_text(form.get("email")), name=_text(form.get("name")),
                     categories=[_text(value) for value in form.getlist("categories")], is_json=False)


def _from_json(request: Request, body: bytes) -> Submitted:
    try:
        data = json.loads(body)
    except ValueError:
        raise SignupError(400, "The body is not valid JSON; send {\"email\": \"you@example.com\"}.") from None
    if not isinstance(data, dict) or not isinstance(data.get("email"), str):
        raise SignupError(400, "Send a JSON object with an \"email\" string, e.g. {\"email\": \"you@example.com\"}.")
    name = data.get("name") or ""
    categories = data.get("categories") or []
    if not isinstance(name, str):
        raise SignupError(400, "\"name\" must be a string.")
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise SignupError(400, "\"categories\" must be a list of category names.")
    return Submitted(email=data["email"], name=name, categories=categories, is_json=True)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _validated(submitted: Submitted, ctx: WebContext) -> SignupRequest:
    email = submitted.email.strip()
    if not email:
        raise SignupError(422, "Please enter your email address.")
    try:
        address = normalize_address(email)  # email-validator's rules; no DNS lookup
    except InvalidAddress as exc:
        raise SignupError(422, f"That email address is not valid: {exc.reason}") from None
    if len(submitted.categories) > MAX_CATEGORIES:
        raise SignupError(400, f"Choose at most {MAX_CATEGORIES} categories.")
    known = _known_categories(ctx)
    wanted = {category_key(name) for name in submitted.categories} - {""}
    unknown = sorted(wanted - known.keys())
    if unknown:
        raise SignupError(422, f"Unknown categories: {', '.join(unknown)[:300]}. "
                               f"Choose from: {', '.join(known.values()) or 'none yet'}; none means all.")
    return SignupRequest(email=address.email, email_key=address.key, name=clean_name(submitted.name),
                         categories=canonical_categories(wanted))


# -- the rate limit and the store ------------------------------------------------------------------------------

def _record(ctx: WebContext, signup: SignupRequest, client: str) -> tuple[bool, confirmation.Outgoing | None]:
    """Count the signup against both limits and, if within them, record it: one transaction.

    The counts are Event rows (kind "signup") so they hold across processes. Their detail is an HMAC of the
    address or client IP under the secret key, never the value itself: a plain SHA-256 of an IPv4 address
    is undone by trying all 2^32 of them.
    """
    now = ctx.clock()
    keys = {"address": _hashed(ctx, "address", signup.email_key), "client": _hashed(ctx, "client", client)}
    limits = {"address": ctx.settings.signup_per_address_per_hour, "client": ctx.settings.signup_per_client_per_hour}
    with session_scope(ctx.engine) as session:
        _serialise(session, sorted(keys.values()))
        for kind, detail in keys.items():
            if _recent(session, detail, since=now - RATE_WINDOW) >= limits[kind]:
                return False, None
        outgoing = confirmation.plan_signup(session=session, signup=signup, tokens=_tokens(ctx), links=ctx.links,
                                            now=now)
        for detail in keys.values():
            record_event(session=session, kind="signup", source="web", now=now, detail=detail)
    return True, outgoing


def _hashed(ctx: WebContext, kind: str, value: str) -> str:
    digest = hmac.new(ctx.settings.secret_key.encode(), f"signup:{kind}:{value}".encode(), hashlib.sha256)
    return f"{kind}:{digest.hexdigest()}"


def _serialise(session: Session, details: list[str]) -> None:
    """PostgreSQL: one signup per address and per client at a time (transaction advisory locks, taken in a
    fixed order), so two racing requests cannot both pass the count. SQLite already serialises writers
    (BEGIN IMMEDIATE, see storage.db)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for detail in details:
        key = int(detail.rpartition(":")[2][:15], 16)  # 60 bits: fits PostgreSQL's signed bigint
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _recent(session: Session, detail: str, *, since) -> int:
    query = select(func.count()).where(Event.kind == "signup", Event.detail == detail, Event.occurred_at > since)
    return session.execute(query).scalar_one()


def _tokens(ctx: WebContext) -> ConfirmTokens:
    return ConfirmTokens.for_settings(ctx.settings, clock=ctx.clock)


@lru_cache(maxsize=1)
def _email_environment():
    return make_environment()


def _with(response: Response, headers: dict[str, str]) -> Response:
    response.headers.update(headers)
    return response


# -- confirmation ---------------------------------------------------------------------------------------------
# No CSRF field on the confirm form: the signed token in the URL is the credential, and only the owner of
# the address has it. GET never changes anything: link scanners fetch it.

@router.get("/confirm/{token}")
def confirm_page(token: str, ctx: WebContext = Depends(get_context)) -> Response:
    ref = _read_token(ctx, token)
    if ref is not None:
        with session_scope(ctx.engine) as session:
            if confirmation.confirmable(session=session, ref=ref) is not None:
                return ctx.page("confirm.html", token_page=True, token=token)
    return _invalid(ctx)


@router.post("/confirm/{token}")
def confirm(token: str, ctx: WebContext = Depends(get_context)) -> Response:
    ref = _read_token(ctx, token)
    if ref is not None:
        with session_scope(ctx.engine) as session:
            subscriber = confirmation.confirm(session=session, ref=ref, now=ctx.clock())
            subscriber_id = subscriber.id if subscriber is not None else None
        if subscriber_id is not None:
            recipient = ctx.signer.recipient_token(subscriber_id=subscriber_id, delivery_id=None)
            return ctx.page("confirm_done.html", token_page=True, preferences_url=f"/p/{recipient}")
    return _invalid(ctx)


def _read_token(ctx: WebContext, token: str):
    try:
        return _tokens(ctx).read(token)
    except BadToken:
        return None


def _invalid(ctx: WebContext) -> Response:
    """Like ctx.not_found(): one page for every failure (forged, altered, expired, gone), with a way forward."""
    return ctx.page("confirm_invalid.html", status_code=404, token_page=True)
