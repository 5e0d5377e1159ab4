"""Casting a vote from a link in the email (`/v/{token}/{slug}/{tool}/{choice}`, digest.web.votes).

The link names a comparison by slug, a tool by its place (1 or 2, as the email lists them) and a choice;
`ballot` checks all three against the store, so a link that names anything else is a bad link. Only
readers the newsletter still writes to may vote: not the unsubscribed, bounced or paused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from digest.votes.voters import CHOICES, voter_pseudonym
from storage.models import Subscriber, SubscriberStatus
from storage.votes import Votable, cast, standing_choice, tally, votable


@dataclass(frozen=True)
class Ballot:
    """What a vote link asks for, checked: the comparison, the tool (0-based here) and the choice."""

    comparison: Votable
    position: int
    choice: str

    @property
    def tool(self) -> str:
        return self.comparison.tools[self.position]


def ballot(*, session, slug: str, tool: str, choice: str) -> Ballot | None:
    """The ballot a link's path names, or None when any part names nothing (one bad-link answer for all)."""
    if choice not in CHOICES or not tool.isascii() or not tool.isdigit() or len(tool) > 2:
        return None
    comparison = votable(session=session, slug=slug)
    if comparison is None or not 1 <= int(tool) <= len(comparison.tools):
        return None
    return Ballot(comparison=comparison, position=int(tool) - 1, choice=choice)


def why_not(subscriber: Subscriber, *, now: datetime) -> str | None:
    """Why this reader cannot vote now, in words ("paused", "unsubscribed"), or None when they can."""
    status = SubscriberStatus(subscriber.status)
    if status is SubscriberStatus.unsubscribed:
        return "unsubscribed"
    if status is not SubscriberStatus.active:  # pending, bounced, complained: we do not write to them
        return "not subscribed"
    if subscriber.paused_until is not None and subscriber.paused_until > now:
        return "paused"
    return None


def cast_vote(*, session, secret_key: str, subscriber: Subscriber, issue_id: int | None, ballot: Ballot,
              now: datetime) -> str:
    """Record the reader's ``ballot``: "recorded", "changed" or "unchanged" (storage.votes.cast)."""
    return cast(session=session, subscriber_id=subscriber.id, comparison=ballot.comparison, position=ballot.position,
                choice=ballot.choice, issue_id=issue_id, voter=voter_pseudonym(secret_key, subscriber.id), now=now)


def current_choice(*, session, subscriber: Subscriber, ballot: Ballot) -> str | None:
    return standing_choice(session=session, subscriber_id=subscriber.id, comparison_id=ballot.comparison.id,
                           position=ballot.position)


def readers_tally(*, session, ballot: Ballot) -> tuple[int, int]:
    """(ship, skip) of this newsletter's readers for the ballot's tool."""
    return tally(session=session, comparison_id=ballot.comparison.id, position=ballot.position)


def event_json(event) -> dict:
    """A vote event as the pull API and the site push send it (issue 17)."""
    return {"id": event.id, "comparison": event.comparison, "tool": event.tool, "choice": event.choice,
            "voter": event.voter, "cast_at": event.cast_at.isoformat(), "replaces": event.replaces}
