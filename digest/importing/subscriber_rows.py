"""The rows of an operator's subscriber CSV: the header, then each row checked into the row to store.

A bad row (an address email-validator refuses, a name that cannot be stored, a category the contract
refuses or no comparison uses) is recorded in the import's result by its physical line and skipped;
a header that does not name the columns refuses the whole file. Storing the rows:
digest.importing.subscribers.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from digest.importing.addresses import InvalidAddress, normalize_address
from digest.importing.csv_rows import Record
from digest.importing.errors import InvalidImport
from digest.importing.known_categories import CellCheck
from digest.importing.outcome import RowError, SubscriberImport
from digest.subscribers.names import name_problem

MAX_NAME = 200
COLUMNS = ("email", "name", "categories")


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
        row = _checked(record.line, dict(zip(columns, values)), problem, result, categories_of)
        if row is not None:
            yield record.line, row


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


def subscriber_row(email: str, key: str, name: str, categories: str) -> dict:
    """A row for storage.imports.upsert_subscribers (its SUBSCRIBER_ROW keys)."""
    return {"email": email, "email_key": key, "name": name, "categories": categories}


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
        name = checked_name(values.get("name", ""))
        categories = categories_of(values.get("categories", ""))
    except InvalidAddress as exc:
        result.reject(RowError(line=line, email=written, reason=exc.reason))
        return None
    except ValueError as exc:
        result.reject(RowError(line=line, email=written, reason=str(exc)))
        return None
    return subscriber_row(address.email, address.key, name, categories)
