"""Reading an operator's CSV: records with the physical line each starts on, and the problems that stop a file.

Line numbers are the ones an editor shows: a quoted field may hold a line break, so a record can span
several physical lines, and a record is named by the line where it starts. The file is decoded one
physical line at a time, so a byte that is not UTF-8 is named by its own line and every record before it
has been read (a text file decodes 8 KB at a time and would fail up to a few hundred lines early).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

_BOM = b"\xef\xbb\xbf"
# Python's csv messages, in the words of someone who saved the file from a spreadsheet.
_CSV_REASONS = {
    "unexpected end of data": 'a quoted field starts in this record and is never closed: add the missing "',
    "',' expected after '\"'": ('text follows the closing quote of a field: put the whole field in double quotes '
                                'and double each " inside it'),
}


@dataclass(frozen=True)
class Record:
    line: int  # the physical line where the record starts; the header is line 1
    values: list[str]


class Unreadable(Exception):
    """The file cannot be read at ``line``; every record before ``first_unread`` (the line where the
    record holding the problem starts) was read, none from it on."""

    def __init__(self, line: int, reason: str, first_unread: int | None = None):
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason
        self.first_unread = line if first_unread is None else first_unread


def records(file: BinaryIO) -> Iterator[Record]:
    """Every record of a UTF-8 CSV (a byte-order mark is skipped), the header first; raises Unreadable.

    ``strict``: a stray character after a closing quote or a quote never closed is an error, not text
    glued onto the field: otherwise one missing quote silently swallows the rest of the file into a name.
    """
    lines = _Lines(file)
    reader = csv.reader(lines, strict=True)
    while True:
        start = lines.count + 1
        try:
            values = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise Unreadable(lines.count + 1, f"byte {exc.object[exc.start]:#04x} is not UTF-8: save the file as UTF-8",
                             first_unread=start) from None
        except csv.Error as exc:
            raise Unreadable(start, _csv_reason(str(exc))) from None
        yield Record(line=start, values=values)


def _csv_reason(message: str) -> str:
    if message.startswith("field larger than field limit"):
        return (f"a field is longer than {csv.field_size_limit():,} characters: "
                'is a closing " missing?')
    return _CSV_REASONS.get(message, message)


class _Lines(Iterable[str]):
    """The physical lines of a binary file, decoded one by one; ``count`` is how many were handed out.

    A line ends at LF, CR LF or a lone CR, as with ``open(newline="")``, which the csv module asks for.
    """

    def __init__(self, file: BinaryIO):
        self._file = file
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        first = True
        for chunk in self._file:  # split at LF; a lone CR inside is split below
            if first:
                chunk, first = chunk.removeprefix(_BOM), False
            for raw in chunk.splitlines(keepends=True) if b"\r" in chunk else (chunk,):
                text = raw.decode("utf-8")  # UTF-8 never has CR or LF inside a character: splitting first is safe
                self.count += 1
                yield text
