"""The categories a subscriber can follow: those the comparisons in the store are filed under.

A category no comparison uses is a typo more often than not ("Writng"), and its follower would get
nothing, silently. `subscribers add` and the CSV import refuse it, naming the closest known category
(difflib) and the known ones. Names are compared as the selection compares them (``category_key``: case
and spacing do not matter), and stored as before. A store with no comparison yet has nothing to check
against: names are then accepted as written (the contract's rule still applies) and reported back as
unchecked, so the command can warn.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from digest.categories import InvalidCategory, category_list, followable, stored_categories
from digest.quoting import quoted
from digest.claim.selection import category_key
from storage.catalog import category_names

LISTED = 20  # known categories named in a message; a site with more gets "… and N more"
CACHE_CELLS = 10_000  # a list repeats a few dozen category combinations a million times
UNCHECKED_KEPT = 20  # unchecked names reported back (a warning quotes a few)


class UnknownCategory(InvalidCategory):
    """A category no comparison in the store is filed under (an InvalidCategory: a ValueError)."""


@dataclass(frozen=True)
class KnownCategories:
    names: dict[str, str]  # category_key -> the site's spelling

    @classmethod
    def in_store(cls, connection) -> KnownCategories:
        """The followable categories of the comparisons in the store. Takes a Connection or a Session."""
        names: dict[str, str] = {}
        for name in sorted(category_names(session=connection)):
            if followable(name):  # legacy names with a ";" cannot be followed on their own
                names.setdefault(category_key(name), name)
        return cls(names)

    def check(self, name: str) -> None:
        """Raises UnknownCategory for a name no comparison uses, with the closest known one and the list."""
        key = category_key(name)
        if not self.names or key in self.names:
            return
        close = difflib.get_close_matches(key, list(self.names), n=1)
        hint = f" (did you mean {quoted(self.names[close[0]])}?)" if close else ""
        raise UnknownCategory(name, f"is unknown{hint}: the comparisons in the store are filed under {self.listed()}")

    def listed(self) -> str:
        spelled = sorted(self.names.values(), key=str.casefold)
        shown = ", ".join(quoted(name, 60) for name in spelled[:LISTED])
        return shown + (f" and {len(spelled) - LISTED} more" if len(spelled) > LISTED else "")


@dataclass
class CellCheck:
    """A CSV cell's ``;``-separated categories in the stored form, each checked by the contract and against
    ``known``; raises InvalidCategory (UnknownCategory for a typo). Remembers the answer per cell text.
    With nothing known, names pass and ``unchecked`` collects the first UNCHECKED_KEPT of them."""

    known: KnownCategories
    unchecked: list[str] = field(default_factory=list)
    _answers: dict[str, str | InvalidCategory] = field(default_factory=dict)

    def __call__(self, text: str) -> str:
        answer = self._answers.get(text)
        if answer is None:
            if len(self._answers) >= CACHE_CELLS:
                self._answers.clear()
            answer = self._answers[text] = self._stored(text)
        if isinstance(answer, InvalidCategory):
            raise type(answer)(answer.name, answer.reason)  # a fresh one: a re-raised instance grows its traceback
        return answer

    def _stored(self, text: str) -> str | InvalidCategory:
        try:
            names = category_list(text)
            for name in names:
                self.known.check(name)
        except InvalidCategory as exc:
            return exc
        if not self.known.names:
            for name in names:
                if len(self.unchecked) < UNCHECKED_KEPT and name not in self.unchecked:
                    self.unchecked.append(name)
        return stored_categories(names)
