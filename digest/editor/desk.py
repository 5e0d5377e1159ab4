"""`digest preview --serve`: the editor's live preview on 127.0.0.1.

One page shows the coming issue as a chosen reader gets it, at desktop (600 px and wider) and phone
(375 px) widths side by side, with its plain text and the who-gets-what table. The page asks every
second for a fingerprint of the templates and the data and reloads when it changes; a template error
is shown on the page with its file and line instead of taking the server down.

The page lists every active subscriber and renders their personal links, so it is for this machine only:
it listens on 127.0.0.1 unless told otherwise (`digest preview --serve --host`), and it answers only
requests addressed to it by a loopback name (`Host: 127.0.0.1`, `localhost` or `[::1]`, any port). A
web page elsewhere that re-points its own domain at 127.0.0.1 (DNS rebinding) sends its own domain as
Host and gets 421 with nothing in it.
"""

from __future__ import annotations

import hashlib
import html
import ipaddress
import re
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.datastructures import MutableHeaders

from digest.editor.dry_run import DryRun, SegmentSummary, dry_run, state_sentence
from digest.editor.preview import NothingToPreview, preview
from digest.render.environment import RenderError, templates_dir
from digest.services import Services
from digest.render.template_errors import template_error
from digest.web.factory import answer_head_like_get
from storage.audience import active_addresses, issues_mark, subscribers_mark
from storage.comparisons import comparisons_mark
from storage.db import session_scope
from storage.stats import issue_states_mark
from storage.types import utcnow

# The editor's own pages: the reload script inline, the email framed from this server, nothing else.
EDITOR_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; "
              "frame-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
# The email in its frame: its styles and remote images as a mail client shows them, never a script.
EMAIL_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src * data:; frame-ancestors 'self'; "
             "base-uri 'none'; form-action 'none'")
# On every answer, refusals and 404s included; a response's own CSP wins over the default one here.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a link followed from the preview must not carry ?as=<address>
    "X-Frame-Options": "SAMEORIGIN",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
# A Host header: a name or an IPv4 address, or an IPv6 address in brackets; then maybe ":port".
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[^\[\]:]+)(?::[0-9]{1,5})?")


def host_names(bind: str) -> frozenset[str]:
    """The Host names the preview answers to when listening on ``bind``: the loopback ones, and ``bind``
    itself when it is one address (an operator who chose to listen there reaches it by that address).
    A wildcard (0.0.0.0, ::) adds nothing: reach it through a tunnel or a port forward to localhost."""
    try:
        address = ipaddress.ip_address(bind)
    except ValueError:
        return LOOPBACK_NAMES | {bind.lower()}
    if address.is_unspecified:
        return LOOPBACK_NAMES
    return LOOPBACK_NAMES | {f"[{address}]" if address.version == 6 else str(address)}


def page_url(bind: str, port: int) -> str:
    """Where to open the preview when it listens on ``bind``: 127.0.0.1 for a wildcard."""
    names = sorted(host_names(bind) - LOOPBACK_NAMES) or ["127.0.0.1" if ":" not in bind else "[::1]"]
    return f"http://{names[0]}:{port}/"


def is_loopback(bind: str) -> bool:
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return bind.lower() == "localhost"


class LocalOnly:
    """ASGI middleware: 421 for a request whose Host is not one of ``names``; security headers on every answer."""

    def __init__(self, app, *, names: frozenset[str]):
        self.app = app
        self.names = names

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        hosts = [value.decode("latin-1") for name, value in scope["headers"] if name == b"host"]
        if len(hosts) != 1 or not self._allowed(hosts[0]):
            # 421 Misdirected Request (RFC 9110 15.5.20): this server does not answer for that name.
            refusal = PlainTextResponse("This preview answers only at http://127.0.0.1, http://localhost or "
                                        "http://[::1] on this machine.\n", status_code=421, headers=SECURITY_HEADERS)
            return await refusal(scope, receive, send)

        async def send_secured(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_secured)

    def _allowed(self, host: str) -> bool:
        match = _HOST.fullmatch(host)
        return match is not None and match[1].lower() in self.names


def fingerprint(services: Services, root: Path | None = None) -> str:
    """Changes whenever a template file or the store's content changes."""
    root = root or templates_dir()
    parts = [f"{p}:{p.stat().st_mtime_ns}:{p.stat().st_size}" for p in sorted(root.rglob("*")) if p.is_file()]
    with session_scope(services.engine) as session:
        parts.append(str(comparisons_mark(session=session)))
        parts.append(str(subscribers_mark(session=session)))
        parts.append(str(issues_mark(session=session)))
        parts.append(str(issue_states_mark(session=session)))  # a pause, a resume or a cancel shows at once
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def create_editor_app(services: Services, *, templates_root: Path | None = None, bind: str = "127.0.0.1") -> FastAPI:
    """``templates_root``: the directory watched for changes (default: the templates in use); ``bind``: the
    address the server listens on, which decides the Host names it answers to (`host_names`)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(LocalOnly, names=host_names(bind))
    # Starlette answers an unexpected error outside every middleware: this answer carries the headers itself.
    app.add_exception_handler(Exception, _failed)
    _add_preview_page(app, services, templates_root)
    _add_email_frame(app, services)
    _add_stats_page(app, services)
    _add_fingerprint(app, services, templates_root)
    answer_head_like_get(app.routes)  # HEAD wherever GET, as on the public app
    return app


def _failed(request, exc) -> PlainTextResponse:
    return PlainTextResponse("The preview failed; the terminal running `digest preview --serve` has the traceback.\n",
                             status_code=500, headers=SECURITY_HEADERS)


def _render(services: Services, week: str | None, reader: str | None):
    return preview(services=services, week=week or None, now=utcnow(), as_email=reader or None)


def _add_preview_page(app: FastAPI, services: Services, templates_root: Path | None) -> None:
    """`/`: the issue as the chosen reader gets it, who gets what, the week and reader picker."""

    @app.get("/", response_class=HTMLResponse)
    def page(week: str | None = None, reader: str | None = Query(None, alias="as")) -> HTMLResponse:
        plan = _plan(services, week)
        body = _state_banner(plan) + _preview_body(services, week, reader) + _who_gets_what(services, plan)
        return _page(services, templates_root, body, week=week, reader=reader)


def _add_email_frame(app: FastAPI, services: Services) -> None:
    """`/email.html`: the email's HTML alone, for the page's desktop and phone frames."""

    @app.get("/email.html", response_class=HTMLResponse)
    def email(week: str | None = None, reader: str | None = Query(None, alias="as")) -> HTMLResponse:
        try:
            result = _render(services, week, reader)
            return HTMLResponse(result.email.html, headers={"Content-Security-Policy": EMAIL_CSP})
        except NothingToPreview as exc:
            return HTMLResponse(f"<p>{html.escape(str(exc))}</p>", status_code=404)
        except RenderError as exc:
            return HTMLResponse(f"<pre>{html.escape(template_error(exc))}</pre>", status_code=500)


def _add_stats_page(app: FastAPI, services: Services) -> None:
    """`/stats`: how past issues did."""

    @app.get("/stats", response_class=HTMLResponse)
    def stats() -> HTMLResponse:
        from digest.track.stats import issue_stats
        from digest.track.stats_page import stats_page

        page = stats_page(issue_stats(engine=services.engine))
        return HTMLResponse(page, headers={"Content-Security-Policy": EDITOR_CSP, "Cache-Control": "no-store"})


def _add_fingerprint(app: FastAPI, services: Services, templates_root: Path | None) -> None:
    """`/fingerprint`: what the page asks every second to know when to reload."""

    @app.get("/fingerprint")
    def current() -> JSONResponse:
        return JSONResponse({"fingerprint": fingerprint(services, templates_root)}, headers={"Cache-Control": "no-store"})


def _preview_body(services: Services, week: str | None, reader: str | None) -> str:
    """The subject, the frames and the plain text; or the template error, or why there is nothing to show."""
    query = urlencode({k: v for k, v in (("week", week), ("as", reader)) if v})
    try:
        result = _render(services, week, reader)
        return _PREVIEW.format(
            subject=html.escape(result.email.subject), reader=html.escape(result.reader),
            week=html.escape(result.week), query=html.escape(query), text=html.escape(result.email.text),
            size=len(result.email.html.encode()) / 1024,
        )
    except RenderError as exc:
        return f'<h2>Template error</h2><pre class="error">{html.escape(template_error(exc))}</pre>'
    except NothingToPreview as exc:
        return f"<p>{html.escape(str(exc))}</p>"


def _plan(services: Services, week: str | None) -> DryRun | None:
    try:
        return dry_run(services=services, week=week or None, now=utcnow())
    except (RenderError, NothingToPreview):  # the preview shows why
        return None


def _state_banner(plan: DryRun | None) -> str:
    """Above the issue: its state (issue 18), and for a paused or cancelled one why and what a resume would send."""
    if plan is None or plan.state is None:
        return ""
    state = plan.state
    sentence = state_sentence(plan)
    if sentence is None:
        left = f": {plan.to_send} deliveries left" if state.name == "sending" else ""
        sentence = f"issue {plan.week} is {state.name}{left}"
    return (f'<p class="state state-{html.escape(state.name)}" role="status"><strong>{html.escape(state.name.title())}'
            f"</strong> · {html.escape(sentence)}</p>")


def _who_gets_what(services: Services, plan: DryRun | None) -> str:
    if plan is None or (plan.sent is None and plan.state is not None and plan.state.name == "cancelled"):
        return ""  # the page above shows why: the preview's error, or the banner's cancel
    if plan.sent:  # an issue that went out: no audience to plan (the dry run says when and to how many)
        from digest.cli.reporting import sent_sentence

        sentence = sent_sentence(plan, tz=services.settings.tz)
        return f"<h2>Who got {html.escape(plan.week)}</h2><p>{html.escape(sentence)}</p>"
    rows = "".join(_segment_row(s) for s in plan.segments)
    nothing = ", ".join(f"{count} {html.escape(reason)}" for reason, count in sorted(plan.nothing.items()))
    return (f"<h2>Who gets what in {html.escape(plan.week)}</h2><table><tr><th>audience</th><th>recipients</th>"
            f"<th>comparisons</th><th>subject</th><th>HTML (budget 90 KB)</th></tr>{rows}</table>"
            f"<p>Get nothing: {nothing or 'nobody'}</p>")


def _segment_row(s: SegmentSummary) -> str:
    return (f"<tr><td>{html.escape(s.audience)}</td><td>{s.recipients}</td><td>{s.shown}"
            f"{' + ' + str(len(s.titles) - s.shown) + ' more' if len(s.titles) > s.shown else ''}</td>"
            f"<td>{html.escape(s.subject)}</td><td>{s.html_bytes / 1024:.1f} KB</td></tr>")


def _page(services: Services, templates_root: Path | None, body: str, *, week: str | None,
          reader: str | None) -> HTMLResponse:
    """``body`` in the page shell, under the picker, with the fingerprint the reload script compares."""
    with session_scope(services.engine) as session:
        people = active_addresses(session=session, limit=500)
    page = (_SHELL.replace("{picker}", _picker(people, week=week, reader=reader)).replace("{body}", body)
            .replace("{fingerprint}", fingerprint(services, templates_root)))
    return HTMLResponse(page, headers={"Content-Security-Policy": EDITOR_CSP, "Cache-Control": "no-store"})


def _picker(people: list[str], *, week: str | None, reader: str | None) -> str:
    """The week box and the reader list (a sample reader, then the first 500 active subscribers)."""
    options = '<option value="">a sample reader of every category</option>' + "".join(
        f'<option{" selected" if p == reader else ""}>{html.escape(p)}</option>' for p in people)
    return (f'<form method="get" action="/"><label>Week <input name="week" value="{html.escape(week or "")}" '
            f'placeholder="this week" size="9"></label> <label>As <select name="as">{options}</select></label> '
            f'<button>Show</button></form>')


_PREVIEW = """<p><strong>Subject:</strong> {subject}<br><span class="muted">Issue {week}, as {reader}; HTML {size:.1f} KB</span></p>
<div class="frames"><figure><figcaption>Desktop (600 px)</figcaption><iframe title="desktop" width="640" height="900" src="/email.html?{query}"></iframe></figure>
<figure><figcaption>Plain text</figcaption><pre class="text">{text}</pre></figure>
<figure><figcaption>Phone (375 px)</figcaption><iframe title="phone" width="375" height="900" src="/email.html?{query}"></iframe></figure></div>"""
# The text part is laid out at 76 columns (digest.render.email): its pane is 78 columns (ch of its own 13px font) plus 24 px
# for a scrollbar, and never wraps, so each line shows as a plain-text reader gets it; a tracked link longer than that
# scrolls. Beside the desktop frame on a 1440 px laptop (640 + 16 + ~650 px); the phone frame follows, and all
# three stand in a row from about 1700 px.

_SHELL = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Digest preview</title>
<style>body{font:15px/1.5 system-ui,sans-serif;margin:1rem;color:#1f2328}.frames{display:flex;gap:1rem;align-items:flex-start;flex-wrap:wrap}
figure{margin:0}iframe{border:1px solid #d0d7de;background:#fff}pre.text{font:13px/1.45 ui-monospace,"DejaVu Sans Mono",monospace;width:calc(78ch + 24px);height:900px;overflow:auto;white-space:pre;border:1px solid #d0d7de;padding:.5rem;margin:0}
.error{background:#fff1f0;color:#a40e26;padding:1rem;border-left:4px solid #a40e26;white-space:pre-wrap}.muted{color:#59636e}
.state{padding:.5rem .75rem;border-left:4px solid #59636e;background:#f6f8fa}.state-paused,.state-cancelled{border-color:#9a6700;background:#fff8c5}
table{border-collapse:collapse}td,th{border:1px solid #d0d7de;padding:.25rem .5rem;text-align:left}</style></head>
<body><h1>Weekly AI Tool Verdicts: preview</h1><p><a href="/stats">How past issues did</a></p>{picker}{body}
<script>const seen="{fingerprint}";setInterval(async()=>{try{const r=await fetch("/fingerprint",{cache:"no-store"});
const j=await r.json();if(j.fingerprint!==seen)location.reload();}catch(e){}},1000);</script></body></html>"""
