"""Sample welcome emails for the email gates (strict MJML, SpamAssassin, Chromium widths, contrast, text part),
built in memory like tests/email_samples.py's issues: a weekly reader after an issue of the demo data, a
monthly reader in their own zone before any issue, and the longest titles the import accepts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from digest.config import Settings
from digest.render.environment import RenderedEmail, email_environment
from digest.services import links_for
from digest.subscribers.welcome import Newcomer, letter_batch, render_letter
from digest.transports.base import Batch, fill
from tests.email_samples import ISSUE_DATE, WEEK, demo_comparisons, long_comparison, sample_settings

CONFIRMED = datetime(2026, 11, 30, 18, 0, tzinfo=timezone.utc)  # a Monday: the first issue is Thursday's


@dataclass(frozen=True)
class SampleWelcome:
    name: str
    newcomer: Newcomer
    delivery: str = "global"


def reader(**changes) -> Newcomer:
    values = dict(id=7, email="ada.reader@example.org", name="Ada", link_tag=281474976710655, timezone=None,
                  cadence="weekly", categories="", week=WEEK,
                  opened_at=datetime.combine(ISSUE_DATE, datetime.min.time(), tzinfo=timezone.utc))
    return Newcomer(**{**values, **changes})


def after_an_issue() -> SampleWelcome:
    """A weekly reader of every category; the latest issue is six comparisons of the demo data."""
    return SampleWelcome("after-an-issue", reader(comparisons=tuple(demo_comparisons(6))))


def before_any_issue() -> SampleWelcome:
    """A monthly reader in Auckland, delivered at local time, before the first issue: the one sentence."""
    newcomer = reader(cadence="monthly", timezone="Pacific/Auckland", categories="writing", week=None, opened_at=None)
    return SampleWelcome("before-any-issue", newcomer, delivery="local")


def longest_titles() -> SampleWelcome:
    """Three verdicts whose titles and tool names are the longest the import accepts (300 and 200 characters)."""
    return SampleWelcome("longest-titles", reader(comparisons=tuple(long_comparison(i, tools=4) for i in range(3))))


WELCOMES = [after_an_issue, before_any_issue, longest_titles]


def welcome_settings(sample: SampleWelcome) -> Settings:
    return sample_settings().model_copy(update={"delivery": sample.delivery})


def render_welcome(sample: SampleWelcome) -> RenderedEmail:
    settings = welcome_settings(sample)
    return render_letter(env=email_environment(), settings=settings, links=links_for(settings),
                         newcomer=sample.newcomer, now=CONFIRMED)


def welcome_batch(sample: SampleWelcome) -> Batch:
    """The one request the signup mailer makes for this welcome (`letter_batch`): headers and substitutions set."""
    settings = welcome_settings(sample)
    return letter_batch(settings=settings, links=links_for(settings), email=render_welcome(sample),
                        newcomer=sample.newcomer)


def filled_welcome_html(sample: SampleWelcome) -> str:
    """The welcome's HTML exactly as the reader receives it."""
    batch = welcome_batch(sample)
    return fill(batch.html, batch.recipients[0].substitutions)
