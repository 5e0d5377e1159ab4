"""The comparison feed (issue 16, item 2): the site's comparisons pulled over HTTP, with no person involved.

The feed is a JSON array in the import file's format, read by the file's own checks
(``comparison_file.checked_comparisons``) and stored by its upsert, all or nothing, in the transaction
that records the answer. Each GET is conditional: it sends back the ETag and Last-Modified of the last
answer imported, and a 304 imports nothing. A feed that cannot be fetched, answers an error or holds a bad
item is recorded with the time it started failing (storage.feeds), so `digest send --dry-run` can say so
from any host; the send goes on with what the store holds (``pull_configured``).

Only http:// and https://, redirects included: a feed URL from the settings never reads a local file.
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from digest.importing.comparison_file import MAX_FILE_BYTES, checked_comparisons
from digest.importing.comparisons import ComparisonImport, store_checked
from digest.importing.errors import InvalidImport
from digest.outbound import NO_ANSWER, no_answer
from digest.quoting import quoted
from storage.db import session_scope
from storage.feeds import find_feed_state, record_answer, record_failure

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from digest.services import Services

log = logging.getLogger("digest.feed")

CHUNK = 64 * 1024  # bytes read at a time, so the size cap and the deadline are checked as the body arrives
USER_AGENT = "weekly-verdicts-digest (comparison feed pull)"


class FeedError(Exception):
    """The feed could not be fetched, or its answer was refused: nothing was imported. The message is one
    line ("unreachable (connection refused)"); ``details``, for a refused file, lists every problem the
    way the file import does, each naming the item and field."""

    def __init__(self, message: str, *, details: str = ""):
        super().__init__(message)
        self.details = details


@dataclass(frozen=True)
class Pulled:
    url: str
    result: ComparisonImport | None  # None: the feed answered 304, nothing changed since the last pull

    def summary(self) -> str:
        if self.result is None:
            return "not modified since the last pull: nothing imported"
        return f"{self.result.created} new, {self.result.updated} updated, {self.result.unchanged} unchanged"


@dataclass(frozen=True)
class _Answer:
    body: bytes | None  # None: 304 Not Modified
    etag: str | None
    last_modified: str | None


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be a feed, in words; None for an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return f"only http:// and https:// feeds can be pulled, not {quoted(url, 80)}"
    if not parts.hostname:
        return f"{quoted(url, 80)} has no host name"
    return None


def pull(*, engine: Engine, url: str, timeout: float, now: datetime) -> Pulled:
    """Fetch ``url`` (conditional, within ``timeout`` seconds) and import it whole; raises FeedError,
    having recorded the failure and imported nothing."""
    problem = url_problem(url)
    if problem:
        raise FeedError(problem)
    with session_scope(engine) as session:
        state = find_feed_state(session=session, url=url)
        etag, modified = (state.etag, state.last_modified) if state else (None, None)
    try:
        answer = fetch(url, etag=etag, last_modified=modified, timeout=timeout)
        items = None if answer.body is None else checked_comparisons(answer.body, name=url)
    except (FeedError, InvalidImport) as exc:
        error = exc if isinstance(exc, FeedError) else FeedError(_invalid(exc, url), details=str(exc))
        with session_scope(engine) as session:
            record_failure(session=session, url=url, at=now, error=str(error))
        raise error from None
    with session_scope(engine) as session:
        result = None if items is None else store_checked(session=session, items=items, now=now)
        counts = None if result is None else (result.created, result.updated, result.unchanged)
        record_answer(session=session, url=url, at=now, etag=answer.etag, last_modified=answer.last_modified,
                      counts=counts)
    return Pulled(url=url, result=result)


def _invalid(exc: InvalidImport, url: str) -> str:
    """A refused feed in one line: its first problem (item, slug and field) and how many more there are."""
    more = exc.total - 1
    return f"invalid: {exc.problems[0].removeprefix(url + ': ')}" + (f" (and {more} more problems)" if more else "")


def pull_configured(*, services: Services, now: datetime) -> Pulled | None:
    """DIGEST_COMPARISONS_FEED_URL pulled before a send (the scheduler's tick, `digest send`). Never raises:
    a feed that fails is one log line, and the send goes on with what the store holds."""
    settings = services.settings
    url = settings.comparisons_feed_url
    if not url:
        return None
    try:
        pulled = pull(engine=services.engine, url=url, timeout=settings.comparisons_feed_timeout, now=now)
    except FeedError as exc:
        log.warning("comparison feed %s: %s; the run goes on with the store", url, exc)
        return None
    except Exception as exc:  # noqa: BLE001 — the store itself failing: the run after this says so again
        log.error("comparison feed %s: not pulled (%s: %s); the run goes on", url, type(exc).__name__, exc)
        return None
    log.info("comparison feed %s: %s", url, pulled.summary())
    return pulled


# -- HTTP -----------------------------------------------------------------------------------------------

class _WebRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to another http(s) URL (urllib's own would follow one to ftp://)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        problem = url_problem(newurl)
        if problem:
            raise FeedError(f"redirected ({code}) to a URL that cannot be pulled: {problem}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_WebRedirects)


def fetch(url: str, *, etag: str | None, last_modified: str | None, timeout: float) -> _Answer:
    """One conditional GET, given up after ``timeout`` seconds; raises FeedError saying what went wrong."""
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if etag:
        headers["If-None-Match"] = etag
    if last_modified:
        headers["If-Modified-Since"] = last_modified
    deadline = time.monotonic() + timeout
    try:
        with _OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            body = _read_capped(response, deadline=deadline, timeout=timeout)
            return _Answer(body, response.headers.get("ETag"), response.headers.get("Last-Modified"))
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 304:
            return _Answer(None, exc.headers.get("ETag"), exc.headers.get("Last-Modified"))
        raise FeedError(f"answered HTTP {exc.code} {exc.reason}") from None
    except NO_ANSWER as exc:
        raise FeedError(no_answer(exc, timeout=timeout)) from None


def _read_capped(response, *, deadline: float, timeout: float) -> bytes:
    """The body, refused past the file import's size cap or the deadline, as it arrives."""
    too_big = FeedError(f"the feed is more than the {MAX_FILE_BYTES // 2**20} MB an import may be: "
                        "nothing imported; serve a smaller file")
    length = response.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > MAX_FILE_BYTES:
        raise too_big
    chunks, size = [], 0
    while chunk := response.read(CHUNK):
        size += len(chunk)
        if size > MAX_FILE_BYTES:
            raise too_big
        if time.monotonic() > deadline:
            raise FeedError(f"no whole answer within {timeout:g} s")
        chunks.append(chunk)
    return b"".join(chunks)


# -- what the dry run says ------------------------------------------------------------------------------

@dataclass(frozen=True)
class FeedReport:
    """What the configured feed last answered, for `digest send --dry-run` (and its --json)."""

    url: str
    answered_at: datetime | None = None
    not_modified: bool = False
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    error: str | None = None
    failing_since: datetime | None = None

    def sentence(self, *, tz) -> str:
        """ "feed: answered 2026-11-30 16:50 UTC, 3 new, 1 updated, 0 unchanged", or since when it fails."""
        if self.answered_at is None:
            answered = "it has never answered"
        else:
            brought = ("nothing new (not modified)" if self.not_modified
                       else f"{self.created} new, {self.updated} updated, {self.unchanged} unchanged")
            answered = f"answered {_when(self.answered_at, tz)}, {brought}"
        if self.error is not None:
            failing = f"feed: {self.error.splitlines()[0]}, since {_when(self.failing_since, tz)}"
            return f"{failing}; {'last ' if self.answered_at else ''}{answered}"
        return f"feed: {answered}" if self.answered_at else f"feed: {self.url} has not been pulled yet"

    def as_dict(self) -> dict:
        return {key: value.isoformat() if isinstance(value, datetime) else value
                for key, value in asdict(self).items()}


def feed_report(*, session, url: str | None) -> FeedReport | None:
    """The report on ``url`` (None when no feed is configured)."""
    if not url:
        return None
    state = find_feed_state(session=session, url=url)
    if state is None:
        return FeedReport(url=url)
    return FeedReport(url=url, answered_at=state.answered_at, not_modified=state.not_modified,
                      created=state.created, updated=state.updated, unchanged=state.unchanged,
                      error=state.error, failing_since=state.failing_since)


def _when(moment: datetime, tz) -> str:
    return f"{moment.astimezone(tz):%Y-%m-%d %H:%M %Z}"
