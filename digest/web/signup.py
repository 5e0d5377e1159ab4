"""Signup with double opt-in: `GET/POST /subscribe` (form and JSON); the link it sends, `GET/POST /confirm/{token}`,
is digest.web.signup_confirm.

No enumeration: every accepted signup gets the same answer, byte for byte, whether the address is new,
pending, active, unsubscribed or suppressed, and the same work behind it: the rate limits' queries, then one
letter handed to the signup mailer's own process (digest.subscribers.signup_mailer), which at a random moment within two
seconds looks the address up, stores it if new and sends the email it calls for, if any. Neither the body
nor the timing of this request or the next tells who owns the address, or whether it was known. The rate limits count per mailbox and per client,
whoever owns the address, so a 429 tells nothing either (digest.web.signup_limits).

Nothing typed at the form is stored on a known row, and a new row gets no name: the name, categories and
time zone travel inside the signed confirmation link and are stored when the owner of the address confirms
(POST). A name that looks like a web or email address is refused (digest.subscribers.names).

The time zone is the browser's: /static/reader-zone.js fills the form's hidden field (without JavaScript it
stays empty). A name the server does not know is no fault of the reader (their browser may know a newer
zone than our zoneinfo), so it is dropped, not refused: they get the newsletter's time until they choose.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from digest.subscribers.confirmation import SignupRequest
from digest.importing import InvalidAddress, normalize_address
from digest.subscribers.names import clean_name, name_problem
from digest.categories import followable
from digest.claim.selection import canonical_categories, category_key
from digest.web import signup_confirm
from digest.web.context import WebContext, get_context
from digest.web.security import CSRF_FIELD, csrf_ok
from digest.web.static import SCRIPT_PAGE_HEADERS
from digest.subscribers.signup_mailer import Letter
from digest.subscribers.zones import UnknownZone, checked_zone
from digest.web.signup_limits import RATE_WINDOW, count_signup
from storage.catalog import category_names
from storage.db import session_scope

router = APIRouter()
router.include_router(signup_confirm.router)  # `GET/POST /confirm/{token}`

MAX_BODY = 16 * 1024  # an address, a name and a few categories; anything bigger is not a signup
MAX_CATEGORIES = 100
SENT_MESSAGE = ("Thanks! If that address can receive our emails, a message is on its way to it. "
                "Open it and confirm to start getting Weekly AI Tool Verdicts.")
LIMITED_MESSAGE = "Too many signups from here or for this address in the last hour. Please try again in an hour."
NO_STORE = {"Cache-Control": "no-store"}
JSON_SHAPE = ('send {"email": "you@example.com", "name": "Ada", "categories": ["Writing"], '
              '"timezone": "Europe/Berlin"} (name, categories and timezone optional).')


class SignupError(Exception):
    """A request we cannot take; ``status`` and a message that says what to change (and nothing about others)."""

    def __init__(self, status: int, message: str, *, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field  # "email", "name" or "categories": the form shows the message next to it (the errors
        # without one, of the request as a whole, get the error page instead)


@dataclass
class Submitted:
    email: str
    name: str
    categories: list[str]
    is_json: bool
    timezone: str = ""


# -- the form -------------------------------------------------------------------------------------------------

@router.get("/subscribe")
def subscribe_form(request: Request, ctx: WebContext = Depends(get_context)) -> Response:
    return _form_page(request, ctx)


def _form_page(request: Request, ctx: WebContext, *, status_code: int = 200, error: SignupError | None = None,
               values: Submitted | None = None) -> Response:
    chosen = {category_key(name) for name in values.categories} if values else set()
    return ctx.form_page(
        request, "subscribe.html", status_code=status_code, token_page=False,
        headers={**NO_STORE, **SCRIPT_PAGE_HEADERS}, csrf_name=CSRF_FIELD,
        error=error, email=values.email if values else "", reader_name=values.name if values else "",
        categories=[(name, category_key(name) in chosen) for name in _known_categories(ctx).values()])


def _known_categories(ctx: WebContext) -> dict[str, str]:
    """Category key → its name as the site writes it, for the categories of the comparisons in the store
    that the comparison contract accepts (digest.categories.followable: none from before it forbade ;)."""
    with session_scope(ctx.engine) as session:
        names = category_names(session=session)
    known: dict[str, str] = {}
    for name in sorted(filter(followable, names), key=category_key):
        known.setdefault(category_key(name), " ".join(name.split()))
    return {key: known[key] for key in sorted(known) if key}


# -- the signup -----------------------------------------------------------------------------------------------

@router.post("/subscribe")
async def subscribe(request: Request, ctx: WebContext = Depends(get_context)) -> Response:
    try:
        submitted = await _read(request, ctx)
    except SignupError as exc:
        if _wants_json(request):
            return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status, headers=NO_STORE)
        return ctx.page("error.html", status_code=exc.status, message=exc.message)
    try:
        signup = _validated(submitted, ctx)
    except SignupError as exc:
        if submitted.is_json:
            return JSONResponse({"error": exc.message, "field": exc.field}, status_code=exc.status, headers=NO_STORE)
        return _form_page(request, ctx, status_code=exc.status, error=exc, values=submitted)
    client = request.client.host if request.client else "unknown"
    now = ctx.clock()
    if not count_signup(ctx, signup, client, now=now):
        headers = {**NO_STORE, "Retry-After": str(int(RATE_WINDOW.total_seconds()))}
        if submitted.is_json:
            return JSONResponse({"error": LIMITED_MESSAGE}, status_code=429, headers=headers)
        return _with(ctx.page("subscribe_limited.html", status_code=429, message=LIMITED_MESSAGE), headers)
    # Everything else happens in the signup mailer's process, within two seconds: looking the address up,
    # storing it if new, the email if any. This request and the ones after it do the same work whoever owns
    # the address (digest.subscribers.signup_mailer).
    request.app.state.signup_mailer.hand_over(Letter(signup=signup, now=now))
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
        return _from_json(body)
    form = await request.form()
    if not csrf_ok(request, form.get(CSRF_FIELD), ctx.settings.secret_key):
        raise SignupError(403, "This form has expired or was sent from another site. Reload the page and try again.")
    return Submitted(email=_text(form.get("email")), name=_text(form.get("name")),
                     categories=[_text(value) for value in form.getlist("categories")], is_json=False,
                     timezone=_text(form.get("timezone")))


def _from_json(body: bytes) -> Submitted:
    """A flat object: "email" (required), "name" and "timezone" strings, "categories" a list of strings;
    nothing else."""
    try:
        data = json.loads(body, object_pairs_hook=_no_repeated_keys)
    except RecursionError:  # nested arrays or objects deeper than Python's stack: no signup looks like that
        raise SignupError(400, f"The body is nested too deeply; {JSON_SHAPE}") from None
    except ValueError as exc:
        raise SignupError(400, f"The body is not valid JSON ({str(exc)[:100]}); {JSON_SHAPE}") from None
    if not isinstance(data, dict):
        raise SignupError(400, f"The body must be a JSON object; {JSON_SHAPE}")
    unknown = sorted(set(data) - {"email", "name", "categories", "timezone"})
    if unknown:
        raise SignupError(400, f"Unknown field {json.dumps(unknown[0])[:60]}; {JSON_SHAPE}")
    if not isinstance(data.get("email"), str):
        raise SignupError(400, f"\"email\" must be a string; {JSON_SHAPE}", field="email")
    name = data.get("name", "")
    if not isinstance(name, str):
        raise SignupError(400, f"\"name\" must be a string; {JSON_SHAPE}", field="name")
    categories = data.get("categories", [])
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise SignupError(400, f"\"categories\" must be a list of category names; {JSON_SHAPE}", field="categories")
    zone = data.get("timezone", "")
    if not isinstance(zone, str):
        raise SignupError(400, f"\"timezone\" must be a string; {JSON_SHAPE}", field="timezone")
    return Submitted(email=data["email"], name=name, categories=categories, is_json=True, timezone=zone)


def _no_repeated_keys(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("a field is given twice")
    return dict(pairs)


def _text(value) -> str:
    return value if isinstance(value, str) else ""


def _validated(submitted: Submitted, ctx: WebContext) -> SignupRequest:
    email = submitted.email.strip()
    if not email:
        raise SignupError(422, "Please enter your email address.", field="email")
    try:
        address = normalize_address(email)  # email-validator's rules; no DNS lookup
    except InvalidAddress as exc:
        raise SignupError(422, f"That email address is not valid: {exc.reason}", field="email") from None
    name = clean_name(submitted.name)
    if problem := name_problem(name):
        raise SignupError(422, f"Your name: {problem}.", field="name")
    if len(submitted.categories) > MAX_CATEGORIES:
        raise SignupError(400, f"Choose at most {MAX_CATEGORIES} categories.", field="categories")
    known = _known_categories(ctx)
    wanted = {category_key(name) for name in submitted.categories} - {""}
    unknown = sorted(wanted - known.keys())
    if unknown:
        raise SignupError(422, f"Unknown categories: {', '.join(unknown)[:300]}. "
                               f"Choose from: {', '.join(known.values()) or 'none yet'}; none means all.",
                          field="categories")
    return SignupRequest(email=address.email, email_key=address.key, name=name,
                         categories=canonical_categories(wanted), timezone=_zone(submitted.timezone))


def _zone(name: str) -> str | None:
    """The browser's zone when we know it; None (the newsletter's time) for none, or for one we do not."""
    try:
        return checked_zone(name)
    except UnknownZone:
        return None


def _with(response: Response, headers: dict[str, str]) -> Response:
    response.headers.update(headers)
    return response
