"""The sunset (issue 18, item 4): a reader who has shown no sign of life in DIGEST_SUNSET_WEEKS weeks is asked
once whether they still want the verdicts, and one who does not answer within 14 days stops getting them.

Mailbox providers judge a sender by how its mail is received: mail sent week after week to people who
never open it lowers the inbox placement of everyone else's. So a reader sent at least 8 issues in the last
26 weeks (the default) without a human open, a click or a vote (storage.sunset says exactly what counts) gets
one short email, "Still want the verdicts?", with one button to a page where a POST keeps them
(digest.web.keep). Without an answer (a keep or any engagement) 14 days later they become *dormant*: the
fan-out takes only active readers, `digest stats` counts them, and every old link of theirs offers to resume.

`sunset(services=…, now=…)` runs both steps; the scheduler calls it daily, `digest subscribers sunset` on
demand. The letters go out in transport batches of up to 1000 (SendGrid's per-request recipient limit), each
claimed in the database first, so two schedulers never ask one reader twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, TOKEN_TAG, Links
from digest.render import mail
from digest.render.environment import RenderedEmail, email_environment, render_email
from digest.render.text import Tagged
from digest.transports.base import Batch
from storage import sunset as rows
from storage.models import SubscriberStatus
from storage.subscribers import record_event, update_subscriber

if TYPE_CHECKING:
    from sqlmodel import Session

    from digest.config import Settings
    from digest.services import Services
    from storage.models import Subscriber

log = logging.getLogger(__name__)

TEMPLATES = ("email/repermission.subject.j2", "email/repermission.txt.j2", "email/repermission.mjml.j2")
ANSWER_DAYS = 14  # issue 18: the time a reader has to answer before they go dormant
BATCH_SIZE = 1000  # SendGrid's per-request recipient limit, as the digest's batches


@dataclass
class SunsetReport:
    asked: int = 0  # re-permission emails sent (with --dry-run: that would be sent)
    dormant: int = 0  # readers who went dormant (with --dry-run: who would)
    error: str | None = None  # why the asking stopped early; the readers not asked are asked on the next pass


def keep_url(links: Links, token: str = TOKEN_TAG) -> str:
    """The button's link: the recipient token, as /u/ and /p/ carry it."""
    return f"{links.base_url}/k/{token}"


def sunset(*, services: Services, now: datetime, dry_run: bool = False) -> SunsetReport:
    """Make dormant who did not answer within ANSWER_DAYS, then ask every reader silent for sunset_weeks."""
    since = now - timedelta(weeks=services.settings.sunset_weeks)
    asked_before = now - timedelta(days=ANSWER_DAYS)
    if dry_run:
        return services.transaction(lambda session: SunsetReport(
            asked=rows.count_to_ask(session=session, now=now, since=since),
            dormant=rows.count_to_put_to_sleep(session=session, asked_before=asked_before)))
    report = SunsetReport()
    report.dormant = services.transaction(
        lambda session: rows.put_to_sleep(session=session, asked_before=asked_before, now=now))
    email = render_letter(settings=services.settings, links=services.links)
    after = 0
    while True:
        claimed = services.transaction(lambda session: rows.claim_to_ask(session=session, now=now, since=since,
                                                                         after=after, limit=BATCH_SIZE))
        if not claimed:
            return report
        report.error = mail.send_letter(services.transport, letter_batch(services=services, email=email, readers=claimed),
                                        what="re-permission emails", sleep=services.sleep)
        if report.error:
            ids = [reader.id for reader in claimed]
            services.transaction(lambda session: rows.release_claim(session=session, ids=ids, asked_at=now))
            return report
        report.asked += len(claimed)
        after = claimed[-1].id


def render_letter(*, settings: Settings, links: Links) -> RenderedEmail:
    """The re-permission email, rendered once with the per-recipient tags (token, name) for the transport."""
    context = dict(
        settings=settings, weeks=settings.sunset_weeks, answer_days=ANSWER_DAYS,
        keep_url=Tagged(keep_url(links)), unsubscribe_url=Tagged(links.unsubscribe()),
        preferences_url=Tagged(links.preferences()),
        name_html=Tagged(NAME_HTML_TAG), name_text=Tagged(NAME_TEXT_TAG),
    )
    return render_email(env=email_environment(), templates=TEMPLATES, context=context)


def letter_batch(*, services: Services, email: RenderedEmail, readers: list[rows.Asked]) -> Batch:
    """One request: the letter to ``readers``, each with their token, name and List-Unsubscribe headers."""
    settings, links = services.settings, services.links
    recipients = [
        mail.recipient(None, reader.email, reader.name,
                       services.signer.recipient_token(subscriber_id=reader.id, delivery_id=None, tag=reader.link_tag),
                       links, settings)
        for reader in readers]
    return mail.batch(settings=settings, email=email, recipients=recipients, headers={"List-Id": settings.list_id},
                      categories=["repermission"], custom_args={"kind": "repermission"})


# -- the reader's answers (digest.web.keep) ------------------------------------------------------------------

def keep(*, session: Session, subscriber: Subscriber, now: datetime) -> bool:
    """"Yes, keep sending": the ask is answered. True when this changed anything (a second POST does not)."""
    if subscriber.status != SubscriberStatus.active or subscriber.repermission_sent_at is None:
        return False
    update_subscriber(subscriber=subscriber, now=now, repermission_sent_at=None)
    record_event(session=session, kind="keep", source="web", now=now, subscriber_id=subscriber.id)
    return True


def resume(*, session: Session, subscriber: Subscriber, now: datetime) -> bool:
    """A dormant reader comes back: active again from the next issue. True when this changed anything."""
    if subscriber.status != SubscriberStatus.dormant:
        return False
    update_subscriber(subscriber=subscriber, now=now, status=SubscriberStatus.active, repermission_sent_at=None,
                      paused_until=None)
    record_event(session=session, kind="resume", source="web", now=now, subscriber_id=subscriber.id)
    return True
