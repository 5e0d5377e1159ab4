"""Security headers on every response, and CSRF protection for the forms.

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
from starlette.middleware.base import BaseHTTPMiddleware

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


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response


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
