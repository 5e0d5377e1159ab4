"""The error every import raises for a file it refuses."""

from __future__ import annotations

from collections.abc import Sequence


class InvalidImport(ValueError):
    """A file refused as a whole. ``problems`` holds one line per problem (the first ~20), each naming
    the file, where the problem is and what is wrong; ``total`` counts every problem found."""

    def __init__(self, problems: Sequence[str], total: int | None = None):
        self.problems = list(problems)
        self.total = len(self.problems) if total is None else total
        lines = list(self.problems)
        if self.total > len(self.problems):
            lines.append(f"… and {self.total - len(self.problems)} more problems of the same kinds")
        super().__init__("\n".join(lines))
