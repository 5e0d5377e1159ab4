"""What an outbound HTTP request that got no answer says, in words: the comparison feed's pull
(digest.importing.feed) and the vote push to the site (digest.votes.push) report failures the same way."""

from __future__ import annotations

import urllib.error
from http.client import HTTPException

# Every way a request can end without an HTTP answer (an HTTPError is an answer: callers handle it first).
NO_ANSWER = (urllib.error.URLError, TimeoutError, OSError, HTTPException)


def no_answer(exc: BaseException, *, timeout: float) -> str:
    """ "no answer within 20 s", or "unreachable (connection refused)": ``exc`` is one of NO_ANSWER."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    return f"unreachable ({_words(reason)})"


def _words(reason: object) -> str:
    """ "connection refused", not "[Errno 111] Connection refused"."""
    text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    return text[:1].lower() + text[1:]
