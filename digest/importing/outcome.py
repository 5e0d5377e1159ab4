"""What a subscriber CSV import did: the counts, by name, and the rows it skipped, by physical line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from digest.importing.csv_rows import Unreadable
from digest.importing.errors import InvalidImport

MAX_ROW_ERRORS = 10_000  # kept in full; a file of a million bad rows reports the count beyond these


@dataclass(frozen=True)
class RowError:
    line: int  # the physical line of the CSV where the row starts; the header is line 1
    email: str  # as written in the file
    reason: str


@dataclass
class SubscriberImport:
    """What an import did. Each non-blank row after the header is counted once: in created, updated or
    unchanged (the first row of an address), duplicates (a later row of the same address) or bad_rows."""

    created: int = 0
    updated: int = 0  # addresses already in the store whose name, categories or time zone changed
    unchanged: int = 0  # addresses already in the store with the same name, categories and time zone
    duplicates: int = 0  # rows repeating an address met earlier in the file (any letter case): the later row wins
    bad_rows: int = 0  # rows skipped; ``errors`` lists the first MAX_ROW_ERRORS of them
    suppressed: int = 0  # of the bad rows, addresses that asked to be forgotten: never re-created
    unchecked_categories: list[str] = field(default_factory=list)  # stored unchecked: no comparison in the store yet
    errors: list[RowError] = field(default_factory=list)

    @property
    def imported(self) -> int:
        """Distinct addresses of the file now stored from it."""
        return self.created + self.known

    @property
    def known(self) -> int:
        """Addresses of the file that were already in the store."""
        return self.updated + self.unchanged

    def reject(self, error: RowError) -> None:
        self.bad_rows += 1
        if len(self.errors) < MAX_ROW_ERRORS:
            self.errors.append(error)

    def summary(self) -> str:
        """Every count, by name: "3 new, 2 already in the store (1 updated, 1 unchanged), …"."""
        text = (f"{self.created} new, {self.known} already in the store ({self.updated} updated, "
                f"{self.unchanged} unchanged), {_rows(self.duplicates)} repeating an address met earlier in the "
                f"file (the later row wins), {_rows(self.bad_rows, 'bad ')} skipped")
        return text + (f" ({self.suppressed} of them asked to be forgotten)" if self.suppressed else "")


class ImportStopped(InvalidImport):
    """A file that could not be read to its end; ``result`` counts what was imported before the problem."""

    def __init__(self, path: Path, stop: Unreadable, result: SubscriberImport):
        imported = f"{result.imported} address{'' if result.imported == 1 else 'es'}"
        super().__init__([
            f"{path.name}: line {stop.line}: {stop.reason}.",
            f"{path.name}: {imported} from the lines before line {stop.first_unread} "
            f"{'was' if result.imported == 1 else 'were'} imported "
            f"({result.summary()}); nothing from line {stop.first_unread} on was.",
            f"{path.name}: fix the file and import it again: addresses already imported are updated, not added twice.",
        ])
        self.result = result


def _rows(count: int, kind: str = "") -> str:
    return f"{count} {kind}row{'' if count == 1 else 's'}"
