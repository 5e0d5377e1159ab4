"""SQLModel tables.

The exactly-once rules live in constraints, not in code: an issue is unique per ISO week, a comparison is
claimed into at most one issue, a delivery is unique per (issue, subscriber). A second process that races
us loses the insert, it does not send twice.
"""


import enum
from datetime import datetime

from sqlalchemy import BigInteger, Column, Index, String, UniqueConstraint
from sqlalchemy import false as sa_false
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Field, Relationship, SQLModel

from storage.types import utc_column as _utc
from storage.types import utcnow


class SubscriberStatus(str, enum.Enum):
    pending = "pending"  # signed up, not yet confirmed (double opt-in)
    active = "active"
    unsubscribed = "unsubscribed"
    bounced = "bounced"
    complained = "complained"
    dormant = "dormant"  # silent for DIGEST_SUNSET_WEEKS and did not answer the re-permission email (issue 18)


class Cadence(str, enum.Enum):
    """How often a reader hears from us (issue 19): every issue, or once a month the month's best they skipped."""

    weekly = "weekly"
    monthly = "monthly"


class IssueKind(str, enum.Enum):
    weekly = "weekly"  # the week's issue: claims what was published (week "2026-W48")
    monthly = "monthly"  # the monthly readers' email: the best of the weekly issues it covers (week "2026-M12")


class DeliveryStatus(str, enum.Enum):
    pending = "pending"  # in the audience, not yet handed to the provider
    sending = "sending"  # leased by a sender; the POST may or may not have happened
    sent = "sent"  # the provider accepted it (202) and gave a message id
    failed = "failed"  # the provider refused it for good (4xx other than 429)
    cancelled = "cancelled"  # the subscriber left (unsubscribed, bounced) between fan-out and send


def _children(*, back_populates: str, order_by: str):
    """A parent's rows in a child table (a comparison's tools, a tool's reviews), in page order; a row is
    deleted with its parent, or when it is taken off the parent's list."""
    return Relationship(back_populates=back_populates,
                        sa_relationship_kwargs={"order_by": order_by, "cascade": "all, delete-orphan"})


class Comparison(SQLModel, table=True):
    __table_args__ = (
        # Picking the week's comparisons: the unclaimed ones, found without reading the claimed history.
        Index("ix_comparison_unclaimed", "claimed", "published_at"),
    )
    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(sa_column=Column(String(200), unique=True, nullable=False))
    title: str
    url: str
    category: str = Field(index=True)
    published_at: datetime = Field(sa_column=_utc(nullable=False, index=True))
    community_votes: int | None = None
    # True once an issue has claimed it (issue_comparison, whose unique comparison_id decides a race, is
    # the record; this copy lets the pick read an index of the few unclaimed rows instead of every row).
    claimed: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    # Counts the content's changes (issue 16): an issue records the version it carried (issue_comparison),
    # and a version an issue carried is kept in comparison_version when a newer one replaces it.
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))

    tools: list["Tool"] = _children(back_populates="comparison", order_by="Tool.position")


class Tool(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True, ondelete="CASCADE")
    position: int
    name: str
    tagline: str = ""
    summary: str = ""
    category: str = ""
    pricing: str = ""
    entry_price: str = ""
    panel_ship_pct: int | None = None
    community_ship_pct: int | None = None

    comparison: Comparison = Relationship(back_populates="tools")
    reviews: list["Review"] = _children(back_populates="tool", order_by="Review.position")


class Review(SQLModel, table=True):
    """One reviewer seat's take on one tool: Builder, Skeptic, Futurist or Founder."""

    id: int | None = Field(default=None, primary_key=True)
    tool_id: int = Field(foreign_key="tool.id", index=True, ondelete="CASCADE")
    position: int
    persona: str
    score: int
    verdict: str  # "ship" or "skip"
    text: str = ""

    tool: Tool = Relationship(back_populates="reviews")


LINK_TAG_BITS = 48  # a restored backup reusing a million ids still matches an old tag with odds of 1 in 2^28


class RandomLinkTag(FunctionElement):
    """A random ``LINK_TAG_BITS``-bit integer, drawn by the database for each inserted subscriber row.

    A server default, so that every way of inserting a subscriber (the ORM, an import's bulk INSERT, raw
    SQL) gets a tag of its own without knowing about it. It need not be secret (tokens are signed); it
    only has to differ from the tag of whoever held the same id before.
    """

    type = BigInteger()
    inherit_cache = True


@compiles(RandomLinkTag, "sqlite")
def _random_link_tag_sqlite(element, compiler, **kw) -> str:
    return f"(random() & {(1 << LINK_TAG_BITS) - 1})"


@compiles(RandomLinkTag, "postgresql")
def _random_link_tag_postgresql(element, compiler, **kw) -> str:
    return f"(floor(random() * {1 << LINK_TAG_BITS}))::bigint"


class Subscriber(SQLModel, table=True):
    """A subscriber; its id and ``link_tag`` are what the links in their emails name (digest.links).

    Ids are never reused (SQLite: AUTOINCREMENT, migration 0007; PostgreSQL: a sequence only goes up), and
    ``link_tag`` is drawn at random for each row, so a link made for a deleted subscriber never matches
    whoever is stored under the same id later, even after a restored backup hands the id out again.
    """

    __table_args__ = {"sqlite_autoincrement": True}
    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(description="as the subscriber typed it")
    # Lower-cased address: makes the address unique case-insensitively on every database.
    email_key: str = Field(sa_column=Column(String(320), unique=True, nullable=False))
    name: str = ""
    status: SubscriberStatus = Field(default=SubscriberStatus.active, index=True, sa_type=String(20))
    # Categories followed, canonical form: sorted, lower-cased, ";"-joined; "" means every category.
    # One string per subscriber lets the fan-out group subscribers by what they follow in one query.
    categories: str = Field(default="", index=True)
    paused_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    confirmed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    unsubscribed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # None until the database has drawn it at insert (read back with the insert's RETURNING).
    link_tag: int | None = Field(
        default=None, sa_column=Column(BigInteger(), nullable=False, server_default=RandomLinkTag()))
    # True only for the rows stored when migration 0007 ran: their emails went out with links that carry
    # no tag, and those keep working. Every row inserted since needs the tag.
    accepts_untagged_links: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})
    # Sunset (issue 18): when the "Still want the verdicts?" email went to this silent reader; a reader who
    # does not answer within 14 days becomes dormant (status), and is asked again only after a new silence.
    repermission_sent_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # The reader's time (issue 19). An IANA zone name ("Pacific/Auckland"), checked where it comes in
    # (digest.subscribers.zones); None: DIGEST_TIMEZONE. With DIGEST_DELIVERY=local the issue is due at the
    # schedule's weekday and hour in this zone.
    timezone: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    cadence: Cadence = Field(default=Cadence.weekly, sa_type=String(8),
                             sa_column_kwargs={"server_default": Cadence.weekly.value})
    welcomed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))  # the welcome email, once


class Issue(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    week: str = Field(sa_column=Column(String(8), unique=True, nullable=False))  # ISO week, "2026-W48"
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    fanned_out_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    completed_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # The readers' votes on the previous issue's comparisons, as this issue tells them (issue 17): JSON, fixed
    # when the issue opens, so every batch and every worker shows the same figures. "" when there were none.
    reader_results: str = Field(default="", sa_column_kwargs={"server_default": ""})
    # Reputation (issue 18, storage.issue_state): a paused issue sends nothing until resumed by hand; a
    # cancelled one never again. The reason says who paused it and why ("guardrail: bounce rate 7.2% …").
    paused_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    pause_reason: str | None = None
    cancelled_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    alerted_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))  # the guardrail's alert, once
    # What the Event Webhook has reported of this issue's emails (digest.track.guardrail), added up per post:
    # each message ends delivered, bounced or dropped (counted once each, by the provider's event id), and
    # may be reported as spam. Running totals, so the guardrail reads four numbers, not the issue's events.
    reported_delivered: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    reported_bounced: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # hard bounces
    reported_dropped: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    reported_complaints: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # Only events that happened from then on count in those totals (set when the issue is resumed, issue 21):
    # the webhook may bring events from before a resume minutes after it, and they must not pause it again.
    judged_since: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # Issue 19. A monthly issue ("2026-M12") claims nothing: it carries the best of the weekly issues it
    # covers (their ids, ","-joined) to the monthly readers who skipped them.
    kind: IssueKind = Field(default=IssueKind.weekly, sa_type=String(8),
                            sa_column_kwargs={"server_default": IssueKind.weekly.value})
    covers: str = Field(default="", sa_column_kwargs={"server_default": ""})
    # The provider's id for the sends it holds until their due time (SendGrid's batch_id, DIGEST_DELIVERY=local),
    # so that cancelling the issue also cancels them there.
    provider_batch_id: str | None = None
    # What the provider was told to do with what it holds (digest.send.held): "pause" (a pause, by hand or by the
    # guardrail), "cancel"; None: nothing, it sends each batch at its time.
    provider_hold: str | None = Field(default=None, sa_column=Column(String(8), nullable=True))


class IssueComparison(SQLModel, table=True):
    """The claim: a comparison appears in exactly one issue (unique comparison_id)."""

    __tablename__ = "issue_comparison"
    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", index=True)
    comparison_id: int = Field(foreign_key="comparison.id", unique=True)
    rank: int = 0
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})  # the comparison's, as claimed


class Segment(SQLModel, table=True):
    """A distinct content of an issue: the comparisons one group of subscribers sees. Rendered once."""

    __table_args__ = (UniqueConstraint("issue_id", "key"),)
    id: int | None = Field(default=None, primary_key=True)
    issue_id: int = Field(foreign_key="issue.id", index=True)
    key: str = Field(max_length=64)  # digest of the comparison ids shown, in rank order
    comparison_ids: str  # every comparison this segment sees, in rank order, ","-joined
    audience: str = ""  # why they get it, shown in the footer: "all categories", "Writing and Data"
    size: int = 0  # recipients at fan-out
    change_ids: str = Field(default="", sa_column_kwargs={"server_default": ""})  # verdict_change ids, ","-joined
    reader_results: bool = Field(default=False, sa_column_kwargs={"server_default": sa_false()})  # its readers got
    # the previous issue, so they get its readers' results (issue 17)


class Delivery(SQLModel, table=True):
    """One email of one issue to one subscriber: fanned out as 'pending', leased, then closed.

    A sender writes every row twice more after the fan-out (the lease, then the outcome), so the table is
    laid out for cheap updates. No index holds a column those updates change (status, lease, message
    id): on PostgreSQL each update is then a HOT update on the same page (the table keeps room for it,
    fillfactor 30, migration 0005) instead of a new entry in every index; on SQLite it leaves the indexes
    alone.

    No foreign keys (migration 0006): PostgreSQL checks one per inserted row, and the two the table had
    were 60 % of a million-row fan-out. What they guarded is kept another way:
    - the segment belongs to the delivery's issue: rows are only ever inserted by `storage.issues.fan_out_segments`, in
      the transaction that creates the issue and its segments, with those segments' ids;
    - no delivery outlives its subscriber: erasing a subscriber deletes their deliveries
      (`subscriptions.forget`), and a delivery the fan-out wrote while an erase ran beside it — the one
      way to leave a row behind — is deleted by the claim that finds it (`storage.deliveries.claim_batch`).
    """

    __table_args__ = (
        # Also the subscriber's deliveries (cancel on unsubscribe, erase), so no index of its own.
        UniqueConstraint("subscriber_id", "issue_id", name="uq_delivery_subscriber_issue"),
        # The sender's claim: an issue's rows in segment order, walked from where its last batch ended.
        Index("ix_delivery_claim", "issue_id", "segment_id", "id"),
        # A delivery's id travels in its email's links: never handed out again (migration 0007).
        {"sqlite_autoincrement": True},
    )
    id: int | None = Field(default=None, primary_key=True)
    issue_id: int
    subscriber_id: int
    segment_id: int
    status: DeliveryStatus = Field(default=DeliveryStatus.pending, sa_type=String(20))
    attempts: int = 0
    # Times this recipient was handed to the provider again after an outcome we could not know (a
    # timeout after the request went out, or a crash between the POST and the commit): each may be a
    # duplicate, so it is counted, never silent.
    ambiguous_resends: int = 0
    lease_owner: str | None = None
    leased_until: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    message_id: str | None = None
    error: str | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
    sent_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))
    # When the email is due in the reader's own time (DIGEST_DELIVERY=local, issue 19); None: at once. Fixed at
    # fan-out, which inserts a segment's rows in due order, so a claim finds a batch of one due time together.
    due_at: datetime | None = Field(default=None, sa_column=_utc(nullable=True))


# Tables of their own concern, in modules of their own; imported here so that `storage.models` registers
# every table and names every model, as it always has.
from storage.models.feeds import FeedState as FeedState  # noqa: E402
from storage.models.tracking import Event as Event  # noqa: E402
from storage.models.tracking import EventKind as EventKind  # noqa: E402
from storage.models.tracking import SendThrottle as SendThrottle  # noqa: E402
from storage.models.tracking import Suppression as Suppression  # noqa: E402
from storage.models.verdicts import ComparisonVersion as ComparisonVersion  # noqa: E402
from storage.models.verdicts import VerdictChange as VerdictChange  # noqa: E402
from storage.models.votes import SitePush as SitePush  # noqa: E402
from storage.models.votes import Vote as Vote  # noqa: E402
from storage.models.votes import VoteEvent as VoteEvent  # noqa: E402
from storage.models.warmup import SendDay as SendDay  # noqa: E402
