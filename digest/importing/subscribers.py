"""Subscribers from an operator: one address (``add_subscriber``) or a CSV list (``import_subscribers``).

An operator's import is taken as confirmed consent: whoever imports a list vouches that the people on it
asked for the digest, so new subscribers start ``active`` with ``confirmed_at = now`` and get no
double-opt-in email. Someone already known (the same address in any letter case) gets the new name and
categories, but never a new status: an unsubscribed, bounced or complaining person stays so — an import
must not re-subscribe anyone who left. An address that asked to be forgotten (a Suppression hash, see
digest.subscriptions) is never added again: ``add_subscriber`` raises SuppressedAddress, an import
skips the row and reports it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from sqlalchemy import ARRAY, Connection, Engine, any_, bindparam, func, literal, select
from sqlalchemy.types import DateTime, String
from sqlalchemy.dialects import postgresql, sqlite

from digest.importing.addresses import InvalidAddress, normalize_address
from digest.importing.errors import InvalidImport
from digest.names import name_problem
from digest.selection import canonical_categories, parse_categories
from digest.subscriptions import suppressed_keys
from storage.models import Subscriber, SubscriberStatus
from storage.types import UTCDateTime

# 5,000 rows per statement and per commit: a million-row import holds SQLite's write lock for a few
# hundredths of a second at a time, so the sender and the web app wait at most that long.
CHUNK_ROWS = 5_000
MAX_ROW_ERRORS = 10_000  # kept in full; a file of a million bad rows reports the count beyond these
MAX_NAME = 200
MAX_CATEGORY = 100  # the comparison schema's longest category name
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


@dataclass(frozen=True)
class RowError:
    line: int  # the physical line of the CSV where the row starts; the header is line 1
    email: str  # as written in the file
    reason: str


@dataclass
class SubscriberImport:
    created: int = 0
    updated: int = 0  # known addresses whose name or categories changed
    unchanged: int = 0  # known addresses already holding the same name and categories
    duplicates: int = 0  # rows repeating an address met earlier in the file: the later row wins
    bad_rows: int = 0  # rows skipped; ``errors`` lists the first MAX_ROW_ERRORS of them
    suppressed: int = 0  # of the bad rows, addresses that asked to be forgotten: never re-created
    errors: list[RowError] = field(default_factory=list)


def add_subscriber(*, engine: Engine, email: str, name: str = "", categories: Iterable[str] = (),
                   now: datetime) -> AddResult:
    """Add an active, confirmed subscriber, or update the name and categories of a known address.

    ``categories`` are names as a person writes them ("Developer Tools"); none means every category.
    Raises InvalidAddress with email-validator's reason, SuppressedAddress (an InvalidAddress) for an
    address that asked to be forgotten, ValueError for a name that cannot be stored (digest.names).
    The status of a known address never changes.
    """
    address = normalize_address(email.strip())
    names = [categories] if isinstance(categories, str) else categories
    row = _row(address.email, address.key, _name(name),
               canonical_categories(part for each in names for part in parse_categories(each)))
    with engine.begin() as connection:
        if suppressed_keys(connection, [address.key]):
            raise SuppressedAddress(address.email)
        known = _known(connection, [address.key])
        _upsert(connection, [row], now)
        subscriber_id = connection.execute(select(_TABLE.c.id).where(_TABLE.c.email_key == address.key)).scalar_one()
    return AddResult(email=address.email, created=address.key not in known, subscriber_id=subscriber_id)


def import_subscribers(*, engine: Engine, path: Path, now: datetime) -> SubscriberImport:
    """Import a CSV of subscribers: good rows are upserted, bad rows reported by line and skipped.

    The header row names the columns, in any order and letter case: ``email`` (required), ``name`` and
    ``categories`` (``;``-separated, empty = every category). An address that appears twice is imported
    once, from its later row, and counted in ``duplicates``. The file is streamed and written in chunks
    of CHUNK_ROWS, each its own transaction, so a file-level problem met halfway (a broken quote, bytes
    that are not UTF-8) raises InvalidImport after the rows before it were imported; importing the fixed
    file again is safe, every row is an upsert.
    """
    result = SubscriberImport()
    seen: set[str] = set()
    with path.open(newline="", encoding="utf-8-sig") as file:
        reader = csv.reader(file)
        rows: dict[str, dict] = {}  # this chunk's rows by email_key: a later row replaces an earlier one
        lines: dict[str, int] = {}  # the line each of those rows came from, to report a suppressed one
        first: set[str] = set()  # this chunk's addresses not met earlier in the file: the ones counted
        for line, values, problem in _records(reader, path):
            row = _checked(line, values, problem, result)
            if row is None:
                continue
            key = row["email_key"]
            if key in seen:
                result.duplicates += 1
            else:
                seen.add(key)
                first.add(key)
            rows[key] = row
            lines[key] = line
            if len(rows) >= CHUNK_ROWS:
                _write(engine, rows, first, lines, now, result)
                rows, first, lines = {}, set(), {}
        if rows:
            _write(engine, rows, first, lines, now, result)
    return result


# -- reading ---------------------------------------------------------------------------------------------

def _records(reader, path: Path) -> Iterator[tuple[int, dict[str, str], str | None]]:
    """(line, {column: value}, problem or None) per non-blank row after the header."""
    try:
        columns = _columns(next(reader, None), path)
        end = reader.line_num
        for values in reader:
            line, end = end + 1, reader.line_num
            if not any(value.strip() for value in values):
                continue  # blank lines and the ",,," rows spreadsheets leave at the end
            problem = None
            if len(values) > len(columns):
                problem = (f"{len(values)} fields but the header names {len(columns)}: "
                           "put a name or categories that contain a comma in double quotes")
            yield line, dict(zip(columns, values)), problem
    except (csv.Error, UnicodeDecodeError) as exc:
        reason = "not UTF-8: save the file as UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc)
        raise InvalidImport([f"{path.name}: line {reader.line_num + 1}: {reason}. The rows before this line "
                             "were imported; fix the file and import it again (known rows are updated, "
                             "not duplicated)"]) from None


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


def _checked(line: int, values: dict[str, str], problem: str | None, result: SubscriberImport) -> dict | None:
    """The row to store, or None after recording why the row is skipped."""
    written = values.get("email", "").strip()
    try:
        if problem:
            raise ValueError(problem)
        if not written:
            raise ValueError("no email address")
        address = normalize_address(written)
        name = _name(values.get("name", ""))
        categories = _categories(values.get("categories", ""))
    except InvalidAddress as exc:
        _reject(result, RowError(line=line, email=written, reason=exc.reason))
        return None
    except ValueError as exc:
        _reject(result, RowError(line=line, email=written, reason=str(exc)))
        return None
    return _row(address.email, address.key, name, categories)


def _reject(result: SubscriberImport, error: RowError) -> None:
    result.bad_rows += 1
    if len(result.errors) < MAX_ROW_ERRORS:
        result.errors.append(error)


def _name(text: str) -> str:
    name = text.strip()
    if len(name) > MAX_NAME:
        raise ValueError(f"the name is {len(name)} characters long, more than the maximum of {MAX_NAME}")
    if "\x00" in name:
        raise ValueError("the name contains a NUL character, which the database cannot store")
    if problem := name_problem(name):
        raise ValueError(problem)
    return name


@lru_cache(maxsize=10_000)  # a list repeats a few dozen category combinations a million times
def _categories(text: str) -> str:
    names = parse_categories(text)
    for name in names:
        if len(name) > MAX_CATEGORY or "\x00" in name:
            raise ValueError(f"category {name[:40]!r}… is longer than {MAX_CATEGORY} characters"
                             if len(name) > MAX_CATEGORY else "a category contains a NUL character")
    return canonical_categories(names)


def _row(email: str, key: str, name: str, categories: str) -> dict:
    return {"email": email, "email_key": key, "name": name, "categories": categories}


# -- writing ---------------------------------------------------------------------------------------------

def _write(engine: Engine, rows: dict[str, dict], first: set[str], lines: dict[str, int], now: datetime,
           result: SubscriberImport) -> None:
    """Upsert one chunk in its own transaction; count what it did to the addresses new to the file.

    Suppressed addresses are taken out first, in the same transaction, and reported as skipped rows.
    """
    with engine.begin() as connection:
        for key in sorted(suppressed_keys(connection, rows), key=lines.__getitem__):
            result.suppressed += 1
            _reject(result, RowError(line=lines[key], email=rows.pop(key)["email"], reason=SUPPRESSED_REASON))
            first.discard(key)
        if not rows:
            return
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
