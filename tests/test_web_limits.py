"""Request bodies capped while they stream (issue 13, item 3), in process.

Every route refuses a body past its limit with 413 before the route runs, whether the Content-Length says
so or a chunked body only shows it on the way; the webhook pulls no more than its limit off the wire; a
dripping body gets 408; an unexpected exception is a plain 500 with the security headers. The same on a
real `digest serve`, under attack, is in test_web_serve.py.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from digest.web.limits import FORM, OTHER, WEBHOOK, BodyLimits, Limit, limit_for
from digest.web.security import SECURITY_HEADERS, SecurityHeaders
from tests.test_reliability_crash import record
from tests.test_security_pages import Site, all_routes
from tests.test_webhook import PUBLIC_KEY

MB = 1024 * 1024
PIECE = 64 * 1024


def assert_secure(headers, what) -> None:
    missing = [name for name in SECURITY_HEADERS if name.lower() not in {k.lower() for k in headers}]
    assert not missing, f"{what}: no {missing}"


@pytest.fixture
def site(sqlite_url):
    site = Site(sqlite_url, sendgrid_webhook_public_key=PUBLIC_KEY)
    yield site
    site.close()


# -- in process -------------------------------------------------------------------------------------------

def run_apart(coroutine):
    """asyncio.run on a thread of its own: the session's Playwright (tests/fixtures_web.py) keeps an event
    loop running in the main thread once a browser test has run, and asyncio.run refuses to nest in it."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def post_counted(app, method: str, url: str, *, declared: int | None, total: int) -> tuple[httpx.Response, int]:
    """Send TOTAL bytes in 64 KB pieces, chunked or under a Content-Length of DECLARED: the answer, and how
    many bytes the app pulled."""
    pulled = 0

    async def body():
        nonlocal pulled
        for _ in range(0, total, PIECE):
            pulled += PIECE
            yield b"[" * PIECE

    headers = {"Content-Type": "application/x-www-form-urlencoded"}  # the forms parse only this
    if declared is not None:
        headers["Content-Length"] = str(declared)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client:
        response = await client.request(method, url, content=body(), headers=headers)
    return response, pulled


def test_every_route_refuses_a_body_past_its_limit_before_the_route_runs(site):
    "every route and method, a body past its limit, declared or chunked: 413 or left unread, never pulled past it"
    before = site.snapshot()
    checked = 0
    for path, methods in all_routes(site.app):
        filled = path.replace("{token}", site.recipient()).replace("{link_token}", site.link()).replace(
            "{week}", site.issue.week)
        limit = limit_for(filled)
        for method in methods:
            for declared in (limit.bytes + 1, None):
                response, pulled = run_apart(post_counted(site.app, method, filled, declared=declared,
                                                            total=limit.bytes + 2 * PIECE))
                what = (method, path, "declared" if declared else "chunked", response.status_code)
                assert pulled <= limit.bytes + PIECE, what
                assert_secure(response.headers, what)
                checked += 1
                if (method, path) == ("GET", "/o/{token}.gif"):
                    # The pixel reads no body: it is answered before anything else (`answer_pixel`), always
                    # with the image, and uvicorn's flow control reads no more than 64 KB meanwhile.
                    assert response.status_code == 200 and response.content.startswith(b"GIF89a"), what
                elif declared or pulled > PIECE:  # chunked: a route that reads nothing answers as it likes
                    assert response.status_code == 413, what
                    assert response.headers["connection"] == "close", what
                    assert "larger than" in response.text or method == "HEAD", what
    assert site.snapshot() == before
    assert limit_for("/webhooks/sendgrid") == WEBHOOK and limit_for("/subscribe") == FORM
    assert limit_for("/p/x") == FORM and limit_for("/archive") == OTHER
    record("body limits per route", requests=checked, server_errors=0)


def test_the_webhook_pulls_no_more_than_its_limit_off_the_wire(site):
    "an unsigned 250 MB chunked post to the webhook: 413 after at most 5 MB + one 64 KB piece was read"
    response, pulled = run_apart(post_counted(site.app, "POST", "/webhooks/sendgrid", declared=None, total=250 * MB))
    assert response.status_code == 413 and "(5 MB)" in response.text
    assert_secure(response.headers, "413")
    assert pulled <= WEBHOOK.bytes + PIECE, pulled


def echo_app(limit: Limit):
    async def echo(request: Request):
        return PlainTextResponse(f"{len(await request.body())} bytes")

    return SecurityHeaders(BodyLimits(Starlette(routes=[Route("/", echo, methods=["POST"])]),
                                      routes=(("/", limit),)))


def test_a_body_that_drips_gets_408_and_one_in_time_goes_through():
    "a body still arriving after its route's deadline: 408 with headers; the same body in time: answered"
    limit = Limit(100, seconds=0.3)

    async def drip(pause: float):
        for _ in range(10):
            await asyncio.sleep(pause)
            yield b"x"

    async def post(pause: float):
        transport = httpx.ASGITransport(app=echo_app(limit))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            return await client.post("/", content=drip(pause))

    slow = run_apart(post(0.1))
    assert slow.status_code == 408 and "did not arrive within 0.3 s" in slow.text
    assert_secure(slow.headers, "408")
    fast = run_apart(post(0.001))
    assert fast.status_code == 200 and fast.text == "10 bytes"


def test_an_unexpected_exception_is_a_plain_500_page_with_the_security_headers(site):
    "a route that raises: a 500 page that shows nothing of the error, with every security header"
    def boom():
        raise RuntimeError("secret detail")

    site.app.add_api_route("/boom-for-test", boom)
    client = TestClient(site.app, raise_server_exceptions=False)
    response = client.get("/boom-for-test")
    assert response.status_code == 500 and "secret detail" not in response.text
    assert "Something went wrong on our side" in response.text
    assert_secure(response.headers, "500")
