"""Category names: one rule, the comparison contract's, wherever a name is accepted.

The contract (contracts/comparison.schema.json, ``$defs.comparison.properties.category``) allows 1–100
characters with no ``;``, ``,`` or line break: ``;`` separates the categories of a CSV cell and of the
stored form ("developer tools;writing"), ``,`` separates CSV fields, a line break ends a CSV record. The
length and the pattern are read from the packaged contract, so the comparisons importer, the subscriber
CSV, ``digest subscribers add -c``, the signup and the preference form all refuse the same names.

The pattern is applied to the whole name (``fullmatch``): JSON Schema means ``$`` as the end of the
text, but Python's ``re.search``, which jsonschema uses, lets ``$`` match before a final line break, so
the schema alone would let "Writing\\n" through.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from importlib import resources

from digest.quoting import quoted
from digest.claim.selection import canonical_categories, parse_categories

SEPARATOR = ";"  # between the categories of a CSV cell, a -c option and the stored form

_DEFINITIONS = json.loads(
    (resources.files("digest") / "contracts" / "comparison.schema.json").read_text("utf-8"))["$defs"]
_CONTRACT = _DEFINITIONS["comparison"]["properties"]["category"]
MAX_LENGTH: int = _CONTRACT["maxLength"]
_PATTERN = re.compile(_CONTRACT["pattern"])
_FORBIDDEN = {";": "a semicolon", ",": "a comma", "\r": "a line break", "\n": "a line break"}
RULE = "category names may not contain ; , or line breaks (the comparison contract)"


class InvalidCategory(ValueError):
    """A category name the contract refuses; ``reason`` says why, in words."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"category {quoted(name, 60)} {reason}")
        self.name = name
        self.reason = reason


def category_problem(name: str, *, required: bool = True) -> str | None:
    """Why the contract refuses ``name`` as a category, in words ("contains a comma: …"); None if it is good.

    ``required=False`` is the rule of a tool's optional category, where a blank text means none.
    """
    if not required and not name.strip():
        return None
    if not name.strip():
        return "is blank: give the category a name"
    if len(name) > MAX_LENGTH:
        return f"is {len(name)} characters long, more than the maximum of {MAX_LENGTH}: shorten it"
    if not _PATTERN.fullmatch(name):
        found = next((_FORBIDDEN[char] for char in name if char in _FORBIDDEN), "a character the contract refuses")
        return f"contains {found}: {RULE}"
    if "\x00" in name:
        return "contains a NUL character, which the database cannot store: remove it"
    return None


def checked_category(name: str) -> str:
    """``name`` when the contract accepts it as a category; raises InvalidCategory."""
    problem = category_problem(name)
    if problem:
        raise InvalidCategory(name, problem)
    return name


def followable(name: str) -> bool:
    """Whether a category in the store can be offered to follow: comparisons imported before the
    contract forbade ``;`` may carry one, and following such a name would store it split in two."""
    return category_problem(name) is None


def category_list(text: str) -> list[str]:
    """The names of a person's ``;``-separated list ("Developer Tools; Writing"), each checked;
    blanks between separators are dropped. Raises InvalidCategory for the first refused name."""
    return [checked_category(name) for name in parse_categories(text, SEPARATOR)]


def stored_categories(names: Iterable[str]) -> str:
    """The stored form of the categories a person chose, every name checked (InvalidCategory);
    "" means every category."""
    return canonical_categories(checked_category(name) for name in names)
