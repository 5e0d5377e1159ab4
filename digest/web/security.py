"""Security headers on every response, and CSRF protection for the forms.

`SecurityHeaders` wraps the whole app (`digest.web.factory.DigestApp`), outside Starlette's own stack: the
last-resort 500 that Starlette sends for an unexpected exception leaves from its outermost layer, past
every middleware added with `add_middleware`, and would otherwise go out without these headers.

CSRF is a double-submit: a random cookie (HttpOnly, SameSite=Strict) and, in each form, an HMAC of it
under the secret key. A cross-site page can make the browser send the cookie but can neither read it nor
forge the HMAC. RFC 8058 one-click unsubscribe POSTs come from mail providers, not browsers, and carry
no CSRF field: the signed token in the URL is their credential (see unsubscribe routes).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from fastapi import Request, Response

CSRF_COOKIE = "digest_csrf"
CSRF_FIELD = "csrf"

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


_RAW_HEADERS = [(name.lower().encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]
_SERVER_ERROR = b"Something went wrong on our side. Please try again in a few minutes."


class SecurityHeaders:
    """ASGI middleware: SECURITY_HEADERS on every response (a header the app set itself is kept), and a
    plain 500 with them when the app fails before answering. The exception is raised on, for the log."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                message = {**message, "headers": headers + [h for h in _RAW_HEADERS if h[0] not in present]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:
                await send_with_headers({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"),
                    (b"content-length", str(len(_SERVER_ERROR)).encode())]})
                await send_with_headers({"type": "http.response.body", "body": _SERVER_ERROR})
            raise


def _sign(secret: str, value: str) -> str:
    return hmac.new(secret.encode(), f"csrf:{value}".encode(), hashlib.sha256).hexdigest()


def csrf_field(request: Request, response: Response, secret: str, *, secure: bool) -> str:
    """The value for the form's hidden CSRF field; sets the cookie on ``response`` when the browser has none."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or len(cookie) > 100:
        cookie = secrets.token_urlsafe(32)
        response.set_cookie(CSRF_COOKIE, cookie, httponly=True, samesite="strict", secure=secure, path="/")
    return _sign(secret, cookie)


def csrf_ok(request: Request, submitted: str | None, secret: str) -> bool:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not submitted:
        return False
    return hmac.compare_digest(_sign(secret, cookie), submitted)
