"""What an import reads and writes: comparisons upserted by slug with their tools and reviews (or taken back
before any issue claimed them: the push API's DELETE), subscribers upserted in bulk by email key. The categories in the store (what the importers check against) are storage.catalog's.

The importers (digest.importing) decide what commits together: they open the transaction and pass its
session or connection here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ARRAY, Connection, any_, bindparam, false, func, literal, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import DateTime, String
from sqlmodel import Session

from storage.models import Comparison, Issue, IssueComparison, Subscriber, SubscriberStatus
from storage.raw import Raw
from storage.types import UTCDateTime

# A comparison's tools as the importer hands them over: (tool columns, [review columns, …]), in order.
ToolColumns = list[tuple[dict, list[dict]]]
# The columns of that shape (digest.importing.comparisons fills each, with its defaults).
COMPARISON_COLUMNS = ("title", "url", "category", "published_at", "community_votes")
TOOL_COLUMNS = ("name", "tagline", "summary", "category", "pricing", "entry_price", "panel_ship_pct",
                "community_ship_pct")
REVIEW_COLUMNS = ("persona", "score", "verdict", "text")

IN_LIST = 500  # slugs per IN list: well under SQLite's 32,766 parameters

_SUBSCRIBERS = Subscriber.__table__
SUBSCRIBER_ROW = ("email", "email_key", "name", "categories")  # the keys of a subscriber row to upsert
ZONE = "timezone"  # a row's optional key: rows from a file without that column leave the stored zone as it is


# -- comparisons -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoredComparison:
    """A stored comparison as an import compares and replaces it: its content in the importer's shape, and
    the ids of the rows that hold it (an update rewrites only the rows that changed)."""

    id: int
    version: int
    claimed: bool
    columns: dict  # COMPARISON_COLUMNS
    tools: ToolColumns  # TOOL_COLUMNS, with their REVIEW_COLUMNS, in page order
    tool_ids: list[int] = field(default_factory=list, repr=False)  # in page order
    review_ids: list[list[int]] = field(default_factory=list, repr=False)  # each tool's, in page order


def stored_comparisons(*, session: Session, slugs: Sequence[str]) -> dict[str, StoredComparison]:
    """The stored comparisons among ``slugs``, by slug, with their tools and reviews.

    One statement on the driver's cursor (storage.raw) per IN_LIST slugs: the ORM's loading of the
    comparison, its tools and its reviews as objects was most of a push's time, inside the write transaction.
    """
    raw = Raw(session)
    # Locked (PostgreSQL) until the import commits: an issue claiming one of them meanwhile waits, so
    # whether it was claimed, and at which version, is what the import reads.
    lock = " FOR UPDATE OF c" if raw.dialect == "postgresql" else ""
    found: dict[str, StoredComparison] = {}
    for start in range(0, len(slugs), IN_LIST):
        for row in raw.fetch(_STORED + f"WHERE c.slug {raw.among('slugs')} ORDER BY c.id, t.position, r.position{lock}",
                             {"slugs": raw.array(slugs[start:start + IN_LIST])}):
            _add_row(found, row, raw)
    return found


_STORED = (f"SELECT c.id, c.slug, c.version, c.claimed, {', '.join('c.' + name for name in COMPARISON_COLUMNS)}, "
           f"t.id, {', '.join('t.' + name for name in TOOL_COLUMNS)}, r.id, {', '.join('r.' + name for name in REVIEW_COLUMNS)} "
           "FROM comparison c LEFT JOIN tool t ON t.comparison_id = c.id LEFT JOIN review r ON r.tool_id = t.id ")
_TOOL_AT = 4 + len(COMPARISON_COLUMNS)  # where a row's tool columns begin (its id first), then its review's
_REVIEW_AT = _TOOL_AT + 1 + len(TOOL_COLUMNS)


def _add_row(found: dict[str, StoredComparison], row: tuple, raw: Raw) -> None:
    """One row of _STORED (a comparison, one of its tools, one of that tool's reviews) into ``found``."""
    comparison_id, slug, version, claimed = row[:4]
    stored = found.get(slug)
    if stored is None:
        columns = dict(zip(COMPARISON_COLUMNS, row[4:_TOOL_AT]))
        columns["published_at"] = raw.read_time(columns["published_at"])
        stored = found[slug] = StoredComparison(id=comparison_id, version=version, claimed=bool(claimed),
                                                columns=columns, tools=[])
    tool_id, review_id = row[_TOOL_AT], row[_REVIEW_AT]
    if tool_id is None:
        return
    if not stored.tool_ids or stored.tool_ids[-1] != tool_id:
        stored.tool_ids.append(tool_id)
        stored.review_ids.append([])
        stored.tools.append((dict(zip(TOOL_COLUMNS, row[_TOOL_AT + 1:_REVIEW_AT])), []))
    if review_id is not None:
        stored.review_ids[-1].append(review_id)
        stored.tools[-1][1].append(dict(zip(REVIEW_COLUMNS, row[_REVIEW_AT + 1:])))


def create_comparison(*, session: Session, slug: str, columns: dict, tools: ToolColumns, now: datetime) -> None:
    raw = Raw(session)
    at = raw.time(now)
    values = {**columns, "published_at": raw.time(columns["published_at"]), "slug": slug, "at": at}
    (comparison_id,), = raw.fetch(
        f"INSERT INTO comparison (slug, {', '.join(COMPARISON_COLUMNS)}, created_at, updated_at) "
        f"VALUES (:slug, {', '.join(':' + name for name in COMPARISON_COLUMNS)}, :at, :at) RETURNING id",
        values)  # claimed and version: their server defaults, false and 1
    reviews: list[dict] = []
    for position, (tool, tool_reviews) in enumerate(tools):
        _insert_tool(raw, comparison_id, position, tool, tool_reviews, reviews)
    _insert_reviews(raw, reviews)


def update_comparison(*, session: Session, comparison: StoredComparison, columns: dict, tools: ToolColumns,
                      now: datetime) -> None:
    """``comparison`` (from ``stored_comparisons``) takes ``columns`` and ``tools`` as its next version;
    ``created_at`` stays. A tool or review row is rewritten only where it changed, in its place: a push that
    moves one tool's panel figure writes that tool's row and the comparison's, not all of them again."""
    raw = Raw(session)
    reviews: list[dict] = []
    gone_tools: list[int] = comparison.tool_ids[len(tools):]
    gone_reviews: list[int] = []
    for position, (tool, tool_reviews) in enumerate(tools):
        if position >= len(comparison.tool_ids):
            _insert_tool(raw, comparison.id, position, tool, tool_reviews, reviews)
            continue
        tool_id, (stored_tool, stored_reviews) = comparison.tool_ids[position], comparison.tools[position]
        if tool != stored_tool:
            raw.run(f"UPDATE tool SET {_assignments(TOOL_COLUMNS)} WHERE id = :id", {**tool, "id": tool_id})
        review_ids = comparison.review_ids[position]
        for order, review in enumerate(tool_reviews):
            if order >= len(review_ids):
                reviews.append({**review, "t": tool_id, "position": order})
            elif review != stored_reviews[order]:
                raw.run(f"UPDATE review SET {_assignments(REVIEW_COLUMNS)} WHERE id = :id",
                        {**review, "id": review_ids[order]})
        gone_reviews += review_ids[len(tool_reviews):]
    for gone in comparison.review_ids[len(tools):]:
        gone_reviews += gone
    if gone_reviews:
        raw.run(f"DELETE FROM review WHERE id {raw.among('ids')}", {"ids": raw.ids(gone_reviews)})
    if gone_tools:
        raw.run(f"DELETE FROM tool WHERE id {raw.among('ids')}", {"ids": raw.ids(gone_tools)})
    _insert_reviews(raw, reviews)
    raw.run(f"UPDATE comparison SET {_assignments(COMPARISON_COLUMNS)}, version = version + 1, updated_at = :at "
            "WHERE id = :id", {**columns, "published_at": raw.time(columns["published_at"]), "at": raw.time(now),
                               "id": comparison.id})


def _assignments(names: Sequence[str]) -> str:
    return ", ".join(f"{name} = :{name}" for name in names)


def _insert_tool(raw: Raw, comparison_id: int, position: int, tool: dict, tool_reviews: list[dict],
                 reviews: list[dict]) -> None:
    """Insert one tool; its reviews join ``reviews``, to be inserted together (_insert_reviews)."""
    (tool_id,), = raw.fetch(
        f"INSERT INTO tool (comparison_id, position, {', '.join(TOOL_COLUMNS)}) "
        f"VALUES (:c, :position, {', '.join(':' + name for name in TOOL_COLUMNS)}) RETURNING id",
        {**tool, "c": comparison_id, "position": position})
    reviews += [{**review, "t": tool_id, "position": order} for order, review in enumerate(tool_reviews)]


def _insert_reviews(raw: Raw, reviews: list[dict]) -> None:
    if reviews:
        raw.run_many(f"INSERT INTO review (tool_id, position, {', '.join(REVIEW_COLUMNS)}) "
                     f"VALUES (:t, :position, {', '.join(':' + name for name in REVIEW_COLUMNS)})", reviews)


def delete_unclaimed_comparison(*, session: Session, slug: str) -> bool:
    """Delete comparison ``slug``, its tools and reviews, if no issue has claimed it; whether it did.

    Unpublishing (issue 16): a comparison no issue holds exists only here, so taking it out of the store
    is what keeps it out of every later issue, and a later PUT stores it anew. A claimed one is never
    deleted: the issues that carry it and the archive keep showing it.

    The row is locked with the unclaimed test in its WHERE: on PostgreSQL, an issue claiming it at this
    moment holds the row until it commits, and then ``claimed`` is true and nothing is deleted. The other
    order (this delete commits while the claim's INSERT … SELECT still sees the row) fails that claim on
    its foreign key: the whole opening rolls back, loudly, and sends nothing.
    """
    in_an_issue = select(IssueComparison.id).where(IssueComparison.comparison_id == Comparison.id).exists()
    query = (select(Comparison).where(Comparison.slug == slug, Comparison.claimed == false(), ~in_an_issue)
             .with_for_update())
    comparison = session.execute(query).scalar_one_or_none()
    if comparison is None:
        return False
    session.delete(comparison)  # its tools and reviews go with it (delete-orphan)
    return True


def claiming_week(*, session: Session, slug: str) -> str | None:
    """The week of the issue that claimed comparison ``slug``; None when no issue has, or no such slug."""
    query = (select(Issue.week).join(IssueComparison, IssueComparison.issue_id == Issue.id)
             .join(Comparison, Comparison.id == IssueComparison.comparison_id).where(Comparison.slug == slug))
    return session.execute(query).scalar_one_or_none()


# -- subscribers -----------------------------------------------------------------------------------------

def stored_subscribers(*, connection: Connection, keys: list[str]) -> dict[str, tuple[str, str, str | None]]:
    """(name, categories, timezone) of the addresses already stored, by email_key."""
    if connection.dialect.name == "postgresql":  # one array parameter: 10x faster than 5,000 IN parameters
        match = _SUBSCRIBERS.c.email_key == any_(bindparam("keys", keys, type_=ARRAY(String())))
    else:
        match = _SUBSCRIBERS.c.email_key.in_(keys)
    query = select(_SUBSCRIBERS.c.email_key, _SUBSCRIBERS.c.name, _SUBSCRIBERS.c.categories,
                   _SUBSCRIBERS.c.timezone).where(match)
    return {key: (name, categories, zone) for key, name, categories, zone in connection.execute(query)}


def subscriber_id(*, connection: Connection, email_key: str) -> int:
    query = select(_SUBSCRIBERS.c.id).where(_SUBSCRIBERS.c.email_key == email_key)
    return connection.execute(query).scalar_one()


def upsert_subscribers(*, connection: Connection, rows: list[dict], now: datetime) -> None:
    """INSERT … ON CONFLICT (email_key) DO UPDATE name, categories — never status, never confirmed_at.

    ``rows`` hold the SUBSCRIBER_ROW keys, and all or none of them ZONE (then the time zone is set too);
    a new address starts active and confirmed at ``now``. Rows whose name and categories (and zone) are
    already stored are not rewritten, so re-importing a list is a read, and ``updated_at`` says when
    something really changed.
    """
    columns = (*SUBSCRIBER_ROW, ZONE) if rows and ZONE in rows[0] else SUBSCRIBER_ROW
    if connection.dialect.name == "postgresql":
        statement, parameters = _from_arrays(rows, now, columns), {}
    else:
        at = _bound_once(now, connection)
        statement = sqlite.insert(_SUBSCRIBERS).values(
            status=SubscriberStatus.active.value, created_at=at, updated_at=at, confirmed_at=at)
        parameters = rows
    new = statement.excluded
    changed = (_SUBSCRIBERS.c.name != new.name) | (_SUBSCRIBERS.c.categories != new.categories)
    updates = {"name": new.name, "categories": new.categories, "updated_at": new.updated_at}
    if ZONE in columns:
        changed |= _SUBSCRIBERS.c.timezone.is_distinct_from(new.timezone)  # NULL is a value here
        updates[ZONE] = new.timezone
    statement = statement.on_conflict_do_update(index_elements=["email_key"], set_=updates, where=changed)
    connection.execute(statement, parameters)


def _from_arrays(rows: list[dict], now: datetime, columns: tuple[str, ...]):
    """PostgreSQL: the chunk as one array per column, unnested into one INSERT … SELECT.

    psycopg's executemany runs one statement per row (~37 µs each: 37 s for a million); one statement
    per chunk over arrays takes a few µs a row.
    """
    arrays = [bindparam(f"{column}_list", [row[column] for row in rows], type_=ARRAY(String()))
              for column in columns]
    source = func.unnest(*arrays).table_valued(*columns).render_derived()
    at = literal(now, UTCDateTime())
    return postgresql.insert(_SUBSCRIBERS).from_select(
        [*columns, "status", "created_at", "updated_at", "confirmed_at"],
        select(*(source.c[column] for column in columns), literal(SubscriberStatus.active.value), at, at, at))


def _bound_once(now: datetime, connection: Connection):
    """``now`` as the driver receives it for a UTCDateTime column, converted once per chunk.

    A typed parameter is converted per row and per column: three datetimes a row cost about half the
    import time. Converted here, it goes in as a constant the driver takes as is (naive UTC on
    PostgreSQL, the ISO string SQLAlchemy writes on SQLite) — the same value UTCDateTime would store.
    """
    convert = UTCDateTime().dialect_impl(connection.dialect).bind_processor(connection.dialect)
    value = convert(now) if convert else now
    return literal(value, String() if isinstance(value, str) else DateTime())
