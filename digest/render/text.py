"""Text from the store made safe for an email: no forged substitution tag, no control character, no line of
its own; and cut to length at a word boundary."""

from __future__ import annotations

import re

from markupsafe import Markup

# Subjects past ~150 characters are cut by every client anyway; long ones read as spam.
SUBJECT_MAX = 150

# "The strongest opinion" is one line of the email, not the review.
OPINION_MAX = 160

# C0 and C1 control characters, DEL included; \t is kept (line breaks are handled before, by _LINE_BREAK).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")

# Every line boundary str.splitlines() knows (CR, LF, CRLF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029): a
# mail client may break a line at any of them, so in a value each one becomes one space.
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")

_SENTENCE_END = re.compile(r"(?<=[.!?])\s")

_ZWSP = "\u200b"


class Laid(str):
    """Text the text part's own `para` laid out: its line breaks are ours, so `neutralize` keeps them."""


class Tagged(str):
    """A URL we built that carries a substitution tag (``[%t%]``): `neutralize` leaves it as it is.

    Autoescape still escapes it like any str (``&`` becomes ``&amp;`` in an attribute).
    """


def neutralize(value):
    """Jinja ``finalize``: make text from the store unable to produce a substitution tag, a control char or a line.

    Every line break in a value becomes a space: a title cannot start a line of the text part of its own
    ("Unsubscribe:" and a foreign URL under it); the template decides where lines begin (`para`).

    "[%" gets a zero-width space ("[\u200b%") so "[%t%]" written in a title is never substituted; "<%"
    likewise (SendGrid's own unsubscribe tags). A value ending in "[" or starting with "%" is guarded too,
    so two adjacent values cannot join into "[%". `Tagged` URLs are ours and pass untouched, and so does
    `Markup` (a macro's output, already neutralized piece by piece): templates never mark store text safe.
    """
    if value is None:
        return ""
    if isinstance(value, (Tagged, Markup, Laid)) or not isinstance(value, str):
        # Markup and Laid are output of our own macros and `para`: every value in them went through here.
        return value
    if "%" not in value and value.isprintable() and not value.endswith(("[", "<")):
        # Nearly every value: nothing below would change it (isprintable() is False for every character
        # _CONTROL removes). Checked first because finalize runs for every expression of every template.
        return value
    value = _CONTROL.sub("", _LINE_BREAK.sub(" ", value))
    value = value.replace("[%", f"[{_ZWSP}%").replace("<%", f"<{_ZWSP}%")
    if value.endswith(("[", "<")):
        value += _ZWSP
    if value.startswith("%"):
        value = _ZWSP + value
    return value


def one_line(value: str, limit: int = SUBJECT_MAX) -> str:
    """A header-safe single line: no control characters, whitespace runs (CR/LF too) as one space, capped."""
    return clip(" ".join(_CONTROL.sub(" ", value).split()), limit)


def clip(value: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary with an ellipsis when it had to be cut."""
    value = value.strip()
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-—") + "…"


def first_sentence(value: str, limit: int = OPINION_MAX) -> str:
    """The first sentence of a paragraph, at most ``limit`` characters (cut with an ellipsis)."""
    sentence = _SENTENCE_END.split(" ".join(value.split()), maxsplit=1)[0]
    return clip(sentence, limit)
