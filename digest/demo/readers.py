"""The demo's readers: what a small list does with an issue, so that `digest stats` and its chart show it.

Recorded through the code the web app runs for the open pixel, the click redirect and the unsubscribe page
(`digest.track.opens.record_open` / `record_click`, `digest.subscribers.subscriptions.unsubscribe`), with each moment
passed in: what the stats then count is what the real routes would have recorded. The readers' choices
come from a random generator seeded with the week, so every run of the demo tells the same story.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from typing import TYPE_CHECKING

from digest.subscribers import subscriptions
from digest.config import Settings
from digest.links import RecipientRef
from digest.track.opens import record_click, record_open
from storage.db import session_scope
from storage.reading import comparison_urls, sent_deliveries
from storage.subscribers import find_subscriber

if TYPE_CHECKING:
    from sqlalchemy import Engine

# User agents as the pixel sees them. Apple Mail's is also what Apple's Privacy Protection proxy sends,
# so only the timing tells its prefetch apart; Gmail's proxy names itself.
APPLE_MAIL = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
THUNDERBIRD = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.4.0"
GMAIL_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
BROWSER = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
           "Version/17.5 Safari/605.1.15")
# Shares of the list, made up to look like a small newsletter's week (not measured): a quarter reads in
# Apple Mail with Privacy Protection on, a sixth in Gmail, a third in another client; the rest never open.
APPLE_SHARE, GMAIL_SHARE, OTHER_SHARE = 0.25, 0.15, 0.35
CLICK_SHARE = 0.45  # of those who read it
# Opens fall within three days of the send: with the default schedule (Thursday 09:00) last week's slot is
# at least 87 hours before the demo's "now"; with another, a moment past "now" is recorded at "now".
READING_HOURS = 72


@dataclass(frozen=True)
class Reader:
    ref: RecipientRef  # what the links in their email carry
    issue_id: int
    sent_at: datetime


@dataclass
class Tally:
    opens: int = 0
    clicks: int = 0
    unsubscribes: int = 0


def readers_of(engine: Engine, week: str) -> tuple[list[Reader], list[str]]:
    """The issue's sent deliveries in id order, and its comparisons' URLs in rank order."""
    with session_scope(engine) as session:
        rows = sent_deliveries(session=session, week=week)
        urls = comparison_urls(session=session, week=week)
    readers = [Reader(RecipientRef(subscriber_id=subscriber_id, delivery_id=delivery_id, tag=tag), issue_id, sent_at)
               for delivery_id, subscriber_id, issue_id, sent_at, tag in rows]
    return readers, urls


def a_week_of_reading(*, engine: Engine, settings: Settings, week: str, now: datetime) -> Tally:
    """Opens (people, Apple's prefetch, Gmail's proxy), clicks and one unsubscribe, all before ``now``."""
    rng = random.Random(f"digest demo {week}")
    readers, urls = readers_of(engine, week)
    tally = Tally()

    def open_(reader: Reader, agent: str, at: datetime) -> None:
        tally.opens += record_open(engine=engine, recipient=reader.ref, user_agent=agent, now=min(at, now),
                                   window_seconds=settings.machine_open_seconds)

    unsubscriber: tuple[Reader, datetime] | None = None
    for reader in readers:
        draw = rng.random()
        read_at = reader.sent_at + timedelta(hours=rng.uniform(0.5, READING_HOURS))
        if draw < APPLE_SHARE:
            open_(reader, APPLE_MAIL, reader.sent_at + timedelta(seconds=rng.uniform(1, 5)))  # the prefetch
            if rng.random() < 0.5:
                open_(reader, APPLE_MAIL, read_at)  # and later the person, through the same proxy
            else:
                continue
        elif draw < APPLE_SHARE + GMAIL_SHARE:
            open_(reader, GMAIL_PROXY, read_at)  # a person opened it; the proxy hides whether or when
        elif draw < APPLE_SHARE + GMAIL_SHARE + OTHER_SHARE:
            open_(reader, THUNDERBIRD, read_at)
            if rng.random() < 0.3:
                open_(reader, THUNDERBIRD, read_at + timedelta(hours=rng.uniform(1, 24)))  # back to it later
        else:
            continue
        if urls and rng.random() < CLICK_SHARE:
            clicked_at = min(read_at + timedelta(minutes=rng.uniform(1, 10)), now)
            tally.clicks += record_click(engine=engine, recipient=reader.ref, url=rng.choice(urls),
                                         user_agent=BROWSER, now=clicked_at)
        elif unsubscriber is None:
            unsubscriber = (reader, min(read_at + timedelta(minutes=2), now))
    if unsubscriber is not None:
        tally.unsubscribes += unsubscribe(engine=engine, reader=unsubscriber[0], now=unsubscriber[1])
    return tally


def apple_prefetch(*, engine: Engine, settings: Settings, week: str) -> Tally:
    """Seconds after a send: Apple's proxy fetches the images for every Apple Mail reader, read or not."""
    rng = random.Random(f"digest demo {week}")
    tally = Tally()
    for reader in readers_of(engine, week)[0]:
        if rng.random() < APPLE_SHARE:
            tally.opens += record_open(engine=engine, recipient=reader.ref, user_agent=APPLE_MAIL,
                                       now=reader.sent_at, window_seconds=settings.machine_open_seconds)
    return tally


def unsubscribe(*, engine: Engine, reader: Reader, now: datetime) -> bool:
    """What the unsubscribe page's button does (digest.web.subscriber), for the delivery the link came in."""
    with session_scope(engine) as session:
        subscriber = find_subscriber(session=session, subscriber_id=reader.ref.subscriber_id)
        return subscriptions.unsubscribe(session=session, subscriber=subscriber, source="web", now=now,
                                         detail="unsubscribe page", delivery_id=reader.ref.delivery_id,
                                         issue_id=reader.issue_id)
