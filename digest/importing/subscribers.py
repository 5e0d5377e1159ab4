"""Subscribers from an operator: one address (``add_subscriber``) or a CSV list (``import_subscribers``).

An operator's import is taken as confirmed consent: whoever imports a list vouches that the people on it
asked for the digest, so new subscribers start ``active`` with ``confirmed_at = now`` and get no
double-opt-in email. Someone already known (the same address in any letter case) gets the new name and
categories, but never a new status: an unsubscribed, bounced or complaining person stays so — an import
must not re-subscribe anyone who left. An address that asked to be forgotten (a Suppression hash, see
digest.subscribers.subscriptions) is never added again: ``add_subscriber`` raises SuppressedAddress, an import
skips the row and reports it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import ARRAY, Connection, Engine, any_, bindparam, func, literal, select
from sqlalchemy.types import DateTime, String
from sqlalchemy.dialects import postgresql, sqlite

from digest.categories import category_list, stored_categories
from digest.importing.addresses import InvalidAddress, normalize_address
from digest.importing.csv_rows import Record, Unreadable, records
from digest.importing.errors import InvalidImport
from digest.importing.known_categories import CellCheck, KnownCategories
from digest.importing.outcome import ImportStopped, RowError, SubscriberImport
from digest.subscribers.names import name_problem
from digest.progress import NullProgress, Progress
from digest.subscribers.subscriptions import suppressed_keys
from storage.models import Subscriber, SubscriberStatus
from storage.types import UTCDateTime

# 5,000 rows per statement and per commit: a million-row import holds SQLite's write lock for a few
# hundredths of a second at a time, so the sender and the web app wait at most that long.
CHUNK_ROWS = 5_000
MAX_NAME = 200
COLUMNS = ("email", "name", "categories")
SUPPRESSED_REASON = "suppressed: this address asked to be forgotten or bounced; it is not added again"

_TABLE = Subscriber.__table__
_ROW_COLUMNS = ("email", "email_key", "name", "categories")


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
                   now: datetime) -> AddResult:
    """Add an active, confirmed subscriber, or update the name and categories of a known address.

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
    row = _row(address.email, address.key, _name(name), stored_categories(chosen))
    with engine.begin() as connection:
        known = KnownCategories.in_store(connection)
        for category in chosen:
            known.check(category)
        if suppressed_keys(connection, [address.key]):
            raise SuppressedAddress(address.email)
        stored = _known(connection, [address.key])
        _upsert(connection, [row], now)
        subscriber_id = connection.execute(select(_TABLE.c.id).where(_TABLE.c.email_key == address.key)).scalar_one()
    return AddResult(email=address.email, created=address.key not in stored, subscriber_id=subscriber_id,
                     unchecked=() if known.names else tuple(chosen))


def import_subscribers(*, engine: Engine, path: Path, now: datetime,
                       progress: Progress | None = None) -> SubscriberImport:
    """Import a CSV of subscribers: good rows are upserted, bad rows reported by line and skipped.

    The header row names the columns, in any order and letter case: ``email`` (required), ``name`` and
    ``categories`` (``;``-separated, empty = every category). Lines are physical lines, as an editor
    numbers them; a row is named by the line where it starts. An address that appears twice, in any
    letter case, is imported once, from its later row, and counted in ``duplicates``. The file is
    streamed and written in chunks of CHUNK_ROWS, each its own transaction, so a problem that stops the
    file halfway (a quote never closed, bytes that are not UTF-8) raises ImportStopped after every row
    before it was imported, saying how many; importing the fixed file again is safe, every row is an upsert.
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
    seen: set[str] = set()  # addresses of the good rows so far
    refused: set[str] = set()  # of these, the suppressed: a later row of one is only a duplicate
    chunk = _Chunk()
    read = 0  # lines after the header reported to ``progress``
    with engine.connect() as connection:
        check = CellCheck(KnownCategories.in_store(connection))
    with path.open("rb") as file:
        try:
            for line, values, problem in _rows(records(file), path):
                row = _checked(line, values, problem, result, check)
                if row is None:
                    continue
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
        except Unreadable as stop:
            _write(engine, chunk, now, result)  # every row before the problem: the count reported is exact
            result.unchecked_categories = check.unchecked
            raise ImportStopped(path, stop, result) from None
        _write(engine, chunk, now, result)
    result.unchecked_categories = check.unchecked
    progress.advance(max(0, total - read))  # blank lines at the end, a record's last lines
    return result


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


# -- reading ---------------------------------------------------------------------------------------------

def _rows(found: Iterator[Record], path: Path) -> Iterator[tuple[int, dict[str, str], str | None]]:
    """(line, {column: value}, problem or None) per non-blank row after the header."""
    header = next(found, None)
    columns = _columns(header.values if header else None, path)
    for record in found:
        values = record.values
        if not any(value.strip() for value in values):
            continue  # blank lines and the ",,," rows spreadsheets leave at the end
        problem = None
        if len(values) > len(columns):
            problem = (f"{len(values)} fields but the header names {len(columns)}: "
                       "put a name or categories that contain a comma in double quotes")
        yield record.line, dict(zip(columns, values)), problem


def _columns(header: list[str] | None, path: Path) -> list[str]:
    expected = f"the first line must be the header {','.join(COLUMNS)} (name and categories optional)"
    if not header:
        raise InvalidImport([f"{path.name}: the file is empty: {expected}"])
    columns = [name.strip().lower() for name in header]
    unknown = [name for name in columns if name not in COLUMNS]
    repeated = sorted({name for name in columns if columns.count(name) > 1})
    if "email" not in columns or unknown or repeated:
        found = ", ".join(f'"{name}"' for name in header[:5]) + (", …" if len(header) > 5 else "")
        what = (f"column {', '.join(repeated)} appears twice" if repeated else
                "no email column" if "email" not in columns else f"unknown column \"{unknown[0]}\"")
        raise InvalidImport([f"{path.name}: line 1: {what} (found {found}): {expected}"])
    return columns


def _checked(line: int, values: dict[str, str], problem: str | None, result: SubscriberImport,
             categories_of: CellCheck) -> dict | None:
    """The row to store, or None after recording why the row is skipped."""
    written = values.get("email", "").strip()
    try:
        if problem:
            raise ValueError(problem)
        if not written:
            raise ValueError("no email address")
        address = normalize_address(written)
        name = _name(values.get("name", ""))
        categories = categories_of(values.get("categories", ""))
    except InvalidAddress as exc:
        result.reject(RowError(line=line, email=written, reason=exc.reason))
        return None
    except ValueError as exc:
        result.reject(RowError(line=line, email=written, reason=str(exc)))
        return None
    return _row(address.email, address.key, name, categories)


def _name(text: str) -> str:
    name = text.strip()
    if len(name) > MAX_NAME:
        raise ValueError(f"the name is {len(name)} characters long, more than the maximum of {MAX_NAME}")
    if "\x00" in name:
        raise ValueError("the name contains a NUL character, which the database cannot store")
    if problem := name_problem(name):
        raise ValueError(problem)
    return name


def _row(email: str, key: str, name: str, categories: str) -> dict:
    return {"email": email, "email_key": key, "name": name, "categories": categories}


# -- writing ---------------------------------------------------------------------------------------------

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
        known = _known(connection, list(first))
        _upsert(connection, list(rows.values()), now)
    for key in first:
        row = rows[key]
        if key not in known:
            result.created += 1
        elif known[key] == (row["name"], row["categories"]):
            result.unchanged += 1
        else:
            result.updated += 1
    return suppressed


def _known(connection: Connection, keys: list[str]) -> dict[str, tuple[str, str]]:
    """(name, categories) of the addresses already stored, by email_key."""
    if connection.dialect.name == "postgresql":  # one array parameter: 10x faster than 5,000 IN parameters
        match = _TABLE.c.email_key == any_(bindparam("keys", keys, type_=ARRAY(String())))
    else:
        match = _TABLE.c.email_key.in_(keys)
    query = select(_TABLE.c.email_key, _TABLE.c.name, _TABLE.c.categories).where(match)
    return {key: (name, categories) for key, name, categories in connection.execute(query)}


def _upsert(connection: Connection, rows: list[dict], now: datetime) -> None:
    """INSERT … ON CONFLICT (email_key) DO UPDATE name, categories — never status, never confirmed_at.

    Rows whose name and categories are already stored are not rewritten, so re-importing a list is
    a read, and ``updated_at`` says when something really changed.
    """
    if connection.dialect.name == "postgresql":
        statement, parameters = _from_arrays(rows, now), {}
    else:
        at = _bound_once(now, connection)
        statement = sqlite.insert(_TABLE).values(
            status=SubscriberStatus.active.value, created_at=at, updated_at=at, confirmed_at=at)
        parameters = rows
    new = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["email_key"],
        set_={"name": new.name, "categories": new.categories, "updated_at": new.updated_at},
        where=(_TABLE.c.name != new.name) | (_TABLE.c.categories != new.categories),
    )
    connection.execute(statement, parameters)


def _from_arrays(rows: list[dict], now: datetime):
    """PostgreSQL: the chunk as four arrays, unnested into one INSERT … SELECT.

    psycopg's executemany runs one statement per row (~37 µs each: 37 s for a million); one statement
    per chunk over arrays takes a few µs a row.
    """
    arrays = [bindparam(f"{column}_list", [row[column] for row in rows], type_=ARRAY(String()))
              for column in _ROW_COLUMNS]
    source = func.unnest(*arrays).table_valued(*_ROW_COLUMNS).render_derived()
    at = literal(now, UTCDateTime())
    return postgresql.insert(_TABLE).from_select(
        [*_ROW_COLUMNS, "status", "created_at", "updated_at", "confirmed_at"],
        select(*(source.c[column] for column in _ROW_COLUMNS), literal(SubscriberStatus.active.value), at, at, at))


def _bound_once(now: datetime, connection: Connection):
    """``now`` as the driver receives it for a UTCDateTime column, converted once per chunk.

    A typed parameter is converted per row and per column: three datetimes a row cost about half the
    import time. Converted here, it goes in as a constant the driver takes as is (naive UTC on
    PostgreSQL, the ISO string SQLAlchemy writes on SQLite) — the same value UTCDateTime would store.
    """
    convert = UTCDateTime().dialect_impl(connection.dialect).bind_processor(connection.dialect)
    value = convert(now) if convert else now
    return literal(value, String() if isinstance(value, str) else DateTime())
