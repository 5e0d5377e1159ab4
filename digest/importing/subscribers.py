"""Subscribers from an operator: one address (``add_subscriber``) or a CSV list (``import_subscribers``).

An operator's import is taken as confirmed consent: whoever imports a list vouches that the people on it asked
for the digest, so new subscribers start ``active`` with ``confirmed_at = now`` and get no double-opt-in
email. Someone already known (the same address in any letter case) gets the new name and categories (and time
zone, when the file has that column), but never a new status: an unsubscribed, bounced or complaining person
stays so — an import must not re-subscribe anyone who left. An address that asked to be forgotten (a
Suppression hash, see digest.subscribers.subscriptions) is never added again: ``add_subscriber`` raises
SuppressedAddress, an import skips the row and reports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from digest.categories import category_list, stored_categories
from digest.importing.addresses import InvalidAddress, normalize_address
from digest.importing.csv_rows import Unreadable, records
from digest.importing.known_categories import CellCheck, KnownCategories
from digest.importing.outcome import ImportStopped, RowError, SubscriberImport
from digest.importing.subscriber_rows import checked_name, good_rows, subscriber_row, zone_problems
from digest.progress import NullProgress, Progress
from digest.subscribers.subscriptions import suppressed_keys
from digest.subscribers.zones import checked_zone
from storage.imports import stored_subscribers, subscriber_id, upsert_subscribers

if TYPE_CHECKING:
    from sqlalchemy import Engine

# 5,000 rows per statement and per commit: a million-row import holds SQLite's write lock for a few
# hundredths of a second at a time, so the sender and the web app wait at most that long.
CHUNK_ROWS = 5_000
SUPPRESSED_REASON = "suppressed: this address asked to be forgotten or bounced; it is not added again"


class SuppressedAddress(InvalidAddress):
    """The address asked to be forgotten (or bounced) and must not be added again."""

    def __init__(self, address: str):
        super().__init__(address, SUPPRESSED_REASON)
        self.args = (f"{address}: {SUPPRESSED_REASON}",)

    def __str__(self) -> str:
        return self.args[0]


@dataclass(frozen=True)
class AddResult:
    email: str  # normalized
    created: bool  # False: the address was known; its name and categories were updated
    subscriber_id: int
    unchecked: tuple[str, ...] = ()  # categories stored without a check: no comparison in the store yet


def add_subscriber(*, engine: Engine, email: str, name: str = "", categories: Iterable[str] = (),
                   now: datetime, timezone: str | None = None) -> AddResult:
    """Add an active, confirmed subscriber, or update the name and categories of a known address; with
    ``timezone`` (an IANA name, "" for none: the newsletter's own) their time zone too, else it is left as it is.

    ``categories`` are names as a person writes them ("Developer Tools"), or ``;``-separated lists of
    them; none means every category. Raises InvalidAddress with email-validator's reason,
    SuppressedAddress (an InvalidAddress) for an address that asked to be forgotten, InvalidCategory (a
    ValueError, digest.categories) for a category the comparison contract refuses, UnknownCategory (an
    InvalidCategory) for one no comparison in the store uses, ValueError for a name that cannot be
    stored (digest.subscribers.names). The status of a known address never changes.
    """
    address = normalize_address(email.strip())
    names = [categories] if isinstance(categories, str) else categories
    chosen = [part for each in names for part in category_list(each)]
    zone = {} if timezone is None else {"timezone": checked_zone(timezone)}  # UnknownZone: a ValueError
    row = subscriber_row(address.email, address.key, checked_name(name), stored_categories(chosen), **zone)
    with engine.begin() as connection:
        known = KnownCategories.in_store(connection)
        for category in chosen:
            known.check(category)
        if suppressed_keys(connection, [address.key]):
            raise SuppressedAddress(address.email)
        stored = stored_subscribers(connection=connection, keys=[address.key])
        upsert_subscribers(connection=connection, rows=[row], now=now)
        added = subscriber_id(connection=connection, email_key=address.key)
    return AddResult(email=address.email, created=address.key not in stored, subscriber_id=added,
                     unchecked=() if known.names else tuple(chosen))


def import_subscribers(*, engine: Engine, path: Path, now: datetime,
                       progress: Progress | None = None) -> SubscriberImport:
    """Import a CSV of subscribers: good rows are upserted, bad rows reported by line and skipped.

    The header row names the columns, in any order and letter case: ``email`` (required), ``name``,
    ``categories`` (``;``-separated, empty = every category) and ``timezone`` (an IANA name such as
    Europe/Berlin; empty = DIGEST_TIMEZONE; a file without the column leaves stored zones as they are). A time
    zone zoneinfo does not know refuses the whole file before anything is stored (InvalidImport, naming each
    line). Lines are physical lines, as an editor numbers them; a row is named by the line where it starts. An
    address that appears twice, in any letter case, is imported once, from its later row, and counted in
    ``duplicates``. The file is streamed and written in chunks of CHUNK_ROWS, each its own transaction, so a
    problem that stops the file halfway (a quote never closed, bytes that are not UTF-8) raises ImportStopped
    after every row before it was imported, saying how many; importing the fixed file again is safe, every row
    is an upsert.
    ``progress`` hears of the file's lines after the header as they are read, once per chunk.
    A category no comparison in the store uses makes its row bad (digest.importing.known_categories).
    """
    if progress is None:
        return _import(engine=engine, path=path, now=now, progress=NullProgress(), total=0)
    total = _data_lines(path)
    progress.begin(path.name, total=total, unit="lines read")
    try:
        return _import(engine=engine, path=path, now=now, progress=progress, total=total)
    finally:
        progress.end()


def _import(*, engine: Engine, path: Path, now: datetime, progress: Progress, total: int) -> SubscriberImport:
    result = SubscriberImport()
    with path.open("rb") as file:
        zone_problems(records(file), path)  # a second read, of files with a timezone column: before any write
    with engine.connect() as connection:
        check = CellCheck(KnownCategories.in_store(connection))
    with path.open("rb") as file:
        try:
            read = _write_rows(engine=engine, rows=good_rows(records(file), path, result, check), now=now,
                               result=result, progress=progress)
        except Unreadable as stop:
            result.unchecked_categories = check.unchecked
            raise ImportStopped(path, stop, result) from None
    result.unchecked_categories = check.unchecked
    progress.advance(max(0, total - read))  # blank lines at the end, a record's last lines
    return result


def _write_rows(*, engine: Engine, rows: Iterator[tuple[int, dict]], now: datetime, result: SubscriberImport,
                progress: Progress) -> int:
    """Write the good rows in chunks of CHUNK_ROWS, counting them in ``result``; the lines after the
    header reported to ``progress``. When the file stops being readable, the rows before it are written."""
    seen: set[str] = set()  # addresses of the good rows so far
    refused: set[str] = set()  # of these, the suppressed: a later row of one is only a duplicate
    chunk = _Chunk()
    read = 0  # lines after the header reported to ``progress``
    try:
        for line, row in rows:
            key = row["email_key"]
            if key in seen:
                result.duplicates += 1
                if key in refused:
                    continue
            else:
                seen.add(key)
                chunk.first.add(key)
            chunk.rows[key] = row
            chunk.lines[key] = line
            if len(chunk.rows) >= CHUNK_ROWS:
                refused |= _write(engine, chunk, now, result)
                chunk = _Chunk()
                progress.advance(line - 1 - read)  # through this row's line; the header is line 1
                read = line - 1
    except Unreadable:
        _write(engine, chunk, now, result)  # every row before the problem: the count reported is exact
        raise
    _write(engine, chunk, now, result)
    return read


def _data_lines(path: Path) -> int:
    """Lines after the header, counted in 1 MB blocks (~0.05 s for a million rows): the progress total."""
    lines, last = 0, b"\n"
    with path.open("rb") as file:
        while block := file.read(1 << 20):
            lines, last = lines + block.count(b"\n"), block[-1:]
    return max(0, lines + (last != b"\n") - 1)


@dataclass
class _Chunk:
    rows: dict[str, dict] = field(default_factory=dict)  # by email_key: a later row replaces an earlier one
    lines: dict[str, int] = field(default_factory=dict)  # the line of each row, to report a suppressed one
    first: set[str] = field(default_factory=set)  # addresses not met earlier in the file: the ones counted


def _write(engine: Engine, chunk: _Chunk, now: datetime, result: SubscriberImport) -> set[str]:
    """Upsert one chunk in its own transaction; count what it did to the addresses new to the file.

    Suppressed addresses are taken out first, in the same transaction, reported as skipped rows and
    returned.
    """
    rows, first, lines = chunk.rows, chunk.first, chunk.lines
    if not rows:
        return set()
    with engine.begin() as connection:
        suppressed = suppressed_keys(connection, rows)
        for key in sorted(suppressed, key=lines.__getitem__):
            result.suppressed += 1
            result.reject(RowError(line=lines[key], email=rows.pop(key)["email"], reason=SUPPRESSED_REASON))
            first.discard(key)
        if not rows:
            return suppressed
        known = stored_subscribers(connection=connection, keys=list(first))
        upsert_subscribers(connection=connection, rows=list(rows.values()), now=now)
    for key in first:
        row = rows[key]
        if key not in known:
            result.created += 1
        elif known[key] == (row["name"], row["categories"], row.get("timezone", known[key][2])):
            result.unchanged += 1
        else:
            result.updated += 1
    return suppressed
