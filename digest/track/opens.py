"""Opens and clicks, recorded as `Event` rows. The web routes, the pixel's writer and the demo call these.

Every open is an event (total opens); stats count distinct deliveries for unique opens. Opens that a
machine made are recorded too, flagged `machine`, so they can be reported apart and never inflate the
human figures:
- image proxies and prefetchers that say who they are in the user agent (MACHINE_AGENTS);
- anything fetching the pixel within `machine_open_seconds` of the send: Apple Mail Privacy Protection
  fetches every image through Apple's proxy as soon as the message reaches the device, with a user agent
  that is the same as real Apple Mail's, so timing is the only signal we have for it;
- the provider's own verdict on the opens it reports (digest.track.events, `ProviderEvent.machine`).
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from digest.links import RecipientRef
from storage.events import OpenTarget, event_row, insert_events, insert_opens, open_targets

if TYPE_CHECKING:
    from sqlalchemy import Engine

USER_AGENT_CHARS = 300  # enough to tell clients apart; a header can be 8 KB

# Case-insensitive fragments of user agents that fetch images or links for, not as, the reader.
MACHINE_AGENTS = re.compile(
    "|".join([
        r"GoogleImageProxy", r"via ggpht\.com",  # Gmail's image proxy
        r"YahooMailProxy",  # Yahoo and AOL Mail
        r"Edge/12\.246",  # Outlook.com / Microsoft Defender prefetch (a fixed, years-old Edge on Chrome/42)
        r"Microsoft Office Existence Discovery", r"Microsoft Office Protocol Discovery", r"BingPreview",
        r"Barracuda", r"Mimecast", r"Proofpoint", r"Symantec", r"Forcepoint", r"IronPort", r"Sophos",
        r"bot\b", r"crawler", r"spider", r"HeadlessChrome", r"facebookexternalhit", r"Slackbot",
        r"python-requests", r"python-urllib", r"aiohttp", r"Go-http-client", r"okhttp", r"Java/", r"libwww-perl",
        r"\bcurl/", r"\bWget/", r"AHC/", r"Amazon CloudFront",
    ]),
    re.IGNORECASE,
)
# Apple Mail Privacy Protection's proxy sometimes sends just this; no mail client does.
BARE_AGENTS = frozenset({"", "mozilla/5.0"})


def is_machine_agent(user_agent: str | None) -> bool:
    agent = user_agent or ""
    # Cached: a list's opens come from a few hundred distinct user agents, and the search (an alternation
    # tried at every position of the string) was 13% of the pixel's time under load (py-spy). Long
    # agents are not cached, so the cache stays small whatever a client sends.
    return _machine_agent_cached(agent) if len(agent) <= 512 else _machine_agent(agent)


def _machine_agent(agent: str) -> bool:
    agent = agent.strip()
    return agent.lower() in BARE_AGENTS or MACHINE_AGENTS.search(agent) is not None


_machine_agent_cached = functools.lru_cache(maxsize=4096)(_machine_agent)


def is_machine_open(*, user_agent: str | None, sent_at: datetime | None, now: datetime, window_seconds: float) -> bool:
    """A proxy or prefetcher by its user agent, or an open too soon after the send for a person."""
    if is_machine_agent(user_agent):
        return True
    return sent_at is not None and now - sent_at < timedelta(seconds=window_seconds)


def record_open(*, engine: Engine, recipient: RecipientRef, user_agent: str | None, now: datetime,
                window_seconds: float) -> bool:
    """Record one pixel fetch: one short transaction, one small SELECT and one INSERT (`record_opens`).

    False (nothing recorded) when the token names no delivery of that subscriber (a test email, or a
    subscriber who deleted their data).
    """
    if recipient.delivery_id is None:
        return False
    return record_opens(engine=engine, opens=[(recipient, user_agent, now)], window_seconds=window_seconds)[0]


def record_opens(*, engine: Engine, opens: list[tuple[RecipientRef, str | None, datetime]],
                 window_seconds: float) -> list[bool]:
    """`record_open` for many fetches in one transaction: one SELECT for their deliveries, one INSERT.

    The pixel's writer process (`digest.track.open_writer`) calls this once per group of opens."""
    ids = {recipient.delivery_id for recipient, _, _ in opens if recipient.delivery_id is not None}
    window = timedelta(seconds=window_seconds)
    with engine.begin() as connection:
        # On the DB-API cursor (storage.raw): this runs for every group of pixel fetches.
        found = open_targets(connection=connection, ids=list(ids)) if ids else {}
        rows, results = [], []
        for recipient, user_agent, now in opens:
            target = found.get(recipient.delivery_id)
            if target is None or not _names(recipient, target):
                results.append(False)
                continue
            # is_machine_open, with the window made once per group
            machine = is_machine_agent(user_agent) or (target.sent_at is not None and now - target.sent_at < window)
            rows.append((now, recipient.delivery_id, target.subscriber_id, target.issue_id, machine,
                         (user_agent or "")[:USER_AGENT_CHARS]))
            results.append(True)
        if rows:
            insert_opens(connection=connection, rows=rows)
    return results


def record_click(*, engine: Engine, recipient: RecipientRef, url: str, user_agent: str | None, now: datetime) -> bool:
    """Record a click on ``url``; a link scanner's click is flagged machine by its user agent only."""
    if recipient.delivery_id is None:
        return False
    with engine.begin() as connection:
        target = open_targets(connection=connection, ids=[recipient.delivery_id]).get(recipient.delivery_id)
        if target is None or not _names(recipient, target):
            return False
        insert_events(connection=connection, rows=[event_row(
            kind="click", source="click", now=now, machine=is_machine_agent(user_agent), detail=url,
            delivery_id=recipient.delivery_id, subscriber_id=recipient.subscriber_id, issue_id=target.issue_id)])
    return True


def _names(recipient: RecipientRef, target: OpenTarget) -> bool:
    """The token was made for this delivery's subscriber row: its id and its tag (a deleted subscriber's
    token names an id that may be someone else's now, never their tag)."""
    return target.subscriber_id == recipient.subscriber_id and recipient.fits(
        link_tag=target.link_tag, accepts_untagged_links=target.accepts_untagged_links)
