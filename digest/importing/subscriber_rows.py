"""The rows of an operator's subscriber CSV: the header, then each row checked into the row to store.

A bad row (an address email-validator refuses, a name that cannot be stored, a category the contract
refuses or no comparison uses) is recorded in the import's result by its physical line and skipped;
a header that does not name the columns refuses the whole file, and so does a time zone zoneinfo does not
know (``zone_problems``, read before anything is stored): skipping that row would drop the reader, and
storing it without its zone would mail them at the wrong hour. Storing the rows:
digest.importing.subscribers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from digest.importing.addresses import InvalidAddress, normalize_address
from digest.importing.csv_rows import Record, Unreadable
from digest.importing.errors import InvalidImport
from digest.importing.known_categories import CellCheck
from digest.importing.outcome import RowError, SubscriberImport
from digest.subscribers.names import name_problem
from digest.subscribers.zones import UnknownZone, checked_zone

MAX_NAME = 200
COLUMNS = ("email", "name", "categories", "timezone")
MAX_ZONE_PROBLEMS = 20  # listed; the rest are counted


def good_rows(found: Iterator[Record], path: Path, result: SubscriberImport,
              categories_of: CellCheck) -> Iterator[tuple[int, dict]]:
    """(line, row to store) per good row after the header; a bad row goes to ``result`` and is skipped."""
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
        cells = dict(zip(columns, values))
        if "timezone" in columns:
            cells.setdefault("timezone", "")  # a short row: every row of a file with the column sets the zone
        row = _checked(record.line, cells, problem, result, categories_of)
        if row is not None:
            yield record.line, row


def zone_problems(found: Iterator[Record], path: Path) -> None:
    """Raise InvalidImport naming each row (file, line, address, the timezone field) whose time zone is not an
    IANA name; nothing when the file has no timezone column. A file that stops being readable is checked up
    to there: the import that follows reports where it stops."""
    header = next(found, None)
    columns = _columns(header.values if header else None, path)
    if "timezone" not in columns:
        return
    problems: list[str] = []
    try:
        for record in found:
            values = dict(zip(columns, record.values))
            try:
                checked_zone(values.get("timezone"))
            except UnknownZone as exc:
                problems.append(f"{path.name}: line {record.line}: {values.get('email', '').strip()!r}: "
                                f"timezone: {exc}")
    except Unreadable:
        pass
    if problems:
        raise InvalidImport([f"{path.name}: nothing was imported: {len(problems)} row"
                             f"{'' if len(problems) == 1 else 's'} with an unknown time zone; fix "
                             f"{'it' if len(problems) == 1 else 'them'} (or leave the cell empty for the "
                             "newsletter's time) and import the file again",
                             *problems[:MAX_ZONE_PROBLEMS]], total=len(problems) + 1)


def checked_name(text: str) -> str:
    """A subscriber's name as stored (stripped); ValueError says why it cannot be stored."""
    name = text.strip()
    if len(name) > MAX_NAME:
        raise ValueError(f"the name is {len(name)} characters long, more than the maximum of {MAX_NAME}")
    if "\x00" in name:
        raise ValueError("the name contains a NUL character, which the database cannot store")
    if problem := name_problem(name):
        raise ValueError(problem)
    return name


def subscriber_row(email: str, key: str, name: str, categories: str, **zone: str | None) -> dict:
    """A row for storage.imports.upsert_subscribers (its SUBSCRIBER_ROW keys, and ``timezone`` when given:
    without it the stored zone is left as it is)."""
    return {"email": email, "email_key": key, "name": name, "categories": categories, **zone}


def _columns(header: list[str] | None, path: Path) -> list[str]:
    expected = f"the first line must be the header {','.join(COLUMNS)} (name, categories and timezone optional)"
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
        name = checked_name(values.get("name", ""))
        categories = categories_of(values.get("categories", ""))
        zone = {"timezone": checked_zone(values["timezone"])} if "timezone" in values else {}
    except InvalidAddress as exc:
        result.reject(RowError(line=line, email=written, reason=exc.reason))
        return None
    except ValueError as exc:
        result.reject(RowError(line=line, email=written, reason=str(exc)))
        return None
    return subscriber_row(address.email, address.key, name, categories, **zone)
