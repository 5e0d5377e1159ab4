"""The comparison file the site hands over (contracts/comparison.schema.json), read and checked whole.

Nothing is written before the file passed every check: valid JSON, valid by the schema, dates in RFC 3339
with an offset, web URLs, each slug once. One bad item refuses the file, with every problem listed (the
first 20) by item, slug and field. Storing the checked items: digest.importing.comparisons.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import fastjsonschema
from jsonschema import Draft202012Validator, ValidationError

from digest.categories import category_problem
from digest.importing.errors import InvalidImport
from digest.quoting import quoted

# 50 MB: a weekly export is kilobytes, a full back-catalogue a few MB; past this the file is a mistake
# and json.loads would hold several times its size in memory.
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_REPORTED = 20  # problems listed in full; the rest are counted
MAX_STORED_INT = 2**31 - 1  # an INTEGER column on PostgreSQL; the contract sets community_votes no maximum

SCHEMA = json.loads((resources.files("digest") / "contracts" / "comparison.schema.json").read_text("utf-8"))
_VALIDATOR = Draft202012Validator(SCHEMA)


def _without_formats(schema: object) -> object:
    """The schema without its "format" keywords, which jsonschema (as used here) does not check either."""
    if isinstance(schema, dict):
        return {key: _without_formats(value) for key, value in schema.items() if key != "format"}
    if isinstance(schema, list):
        return [_without_formats(value) for value in schema]
    return schema


# The schema compiled to Python once: 30 µs for a pushed comparison against jsonschema's 500 µs (the push
# API's PUT, issue 20). It only says whether data passes; jsonschema still decides and words the problems
# of anything it refuses. It is at most stricter (its "$" does not match before a final line break), never
# more lenient: tests/test_import_comparisons.py holds the two to that on generated items.
_PASSES = fastjsonschema.compile(_without_formats(SCHEMA))

# RFC 3339 section 5.6; jsonschema checks "format": "date-time" only when an extra package is installed.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?")
_PATTERN_HINTS = {
    "slug": ": use lower-case letters, digits and hyphens, starting with a letter or digit",
    "url": ": it must start with http:// or https://",
}


def load_comparisons(path: Path) -> list[dict]:
    """The items of a comparison file, as given, once every check passed; raises InvalidImport."""
    return _checked(_read(path), name=path.name)


def checked_comparisons(raw: bytes, *, name: str) -> list[dict]:
    """The items of a comparison file already read (the pulled feed, digest.importing.feed), by the file's
    checks, its problems named after ``name``; raises InvalidImport. The caller caps the size it reads."""
    try:
        data = parse_json(raw)
    except ValueError as exc:
        raise InvalidImport([f"{name}: {exc}"]) from None
    return _checked(data, name=name)


def _checked(data: object, *, name: str) -> list[dict]:
    problems = list(_problems(data))
    if problems:
        lines = [f"{name}: {problem}" for problem in problems[:MAX_REPORTED]]
        raise InvalidImport(lines, total=len(problems))
    return data


def parse_published_at(text: str) -> datetime:
    """An RFC 3339 date-time with an offset, as an aware UTC datetime; ValueError says what is wrong."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"{_show(text)} is not an RFC 3339 date-time like 2026-11-23T09:30:00+00:00")
    if match["offset"] is None:
        raise ValueError(f"{_show(text)} has no UTC offset: add one, e.g. {text}+00:00 (or Z for UTC)")
    try:
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1] in "Zz" else text)
    except ValueError as exc:
        raise ValueError(f"{_show(text)} is not a real date and time ({exc})") from None
    return moment.astimezone(timezone.utc)


# -- reading and checking ----------------------------------------------------------------------------

def _read(path: Path) -> object:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InvalidImport([f"{path.name}: the file is {size / 2**20:.0f} MB, more than the "
                             f"{MAX_FILE_BYTES // 2**20} MB an import may be: split it into smaller files"])
    try:
        return parse_json(path.read_bytes())
    except ValueError as exc:
        raise InvalidImport([f"{path.name}: {exc}"]) from None


def parse_json(raw: bytes) -> object:
    """UTF-8 JSON (a BOM allowed) as Python values; a ValueError says where and what is wrong. The file
    import and the push API (digest.web.api) read their bytes with this."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"line {line}: byte {raw[exc.start]:#04x} is not UTF-8: save the file as UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}") from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, arrays nested thousands deep
        raise ValueError(f"not valid JSON for an import: {exc}") from None


def _problems(data: object) -> Iterator[str]:
    """Every problem of the file, as "item N (slug "x"): field: what is wrong", in item order."""
    if not isinstance(data, list):
        yield f"the file must hold a JSON array of comparisons ([{{…}}, …]), not {_json_type(data)}"
        return
    for index, where, what in _located(data):
        label = _item_label(data[index], index)
        yield f"{label}: {where}: {what}" if where else f"{label}: {what}"


def comparison_problems(item: object) -> list[tuple[str, str]]:
    """Every problem of one comparison (an item of the file, e.g. the push API's body), by the same checks,
    as (where, what): ("tools[0].reviews[1].score", "130 is greater than the maximum of 100"); where is ""
    for the item as a whole. Empty when the item may be stored."""
    return [(where, what) for _, where, what in _located([item])]


def _located(data: list) -> list[tuple[int, str, str]]:
    """Every problem of the items as (item index, where, what), in item order."""
    found = [(error.absolute_path[0], *_schema_problem(error))
             for error in _schema_errors(data) if not _category_text(error)]
    first_of_slug: dict[str, int] = {}
    for index, item in enumerate(data):
        if isinstance(item, dict):
            found.extend((index, where, what) for where, what in _item_problems(item, index, first_of_slug))
    return sorted(found, key=lambda triple: triple[0])


def _schema_errors(data: list) -> list[ValidationError]:
    """jsonschema's errors for ``data``, asked only when the compiled schema refuses it."""
    try:
        _PASSES(data)
    except fastjsonschema.JsonSchemaException:
        return list(_VALIDATOR.iter_errors(data))
    return []


def _item_problems(item: dict, index: int, first_of_slug: dict[str, int]) -> Iterator[tuple[str, str]]:
    """What the schema cannot say: real dates with offsets, usable URLs, unique slugs, storable text and counts."""
    published, url, slug = item.get("published_at"), item.get("url"), item.get("slug")
    votes = item.get("community_votes")
    if isinstance(published, str):
        try:
            parse_published_at(published)
        except ValueError as exc:
            yield "published_at", str(exc)
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        if not urlsplit(url).hostname:
            yield "url", f"{_show(url)} has no host name"
        elif any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
            yield "url", f"{_show(url)} contains a space or control character: percent-encode it"
    if isinstance(votes, int) and votes > MAX_STORED_INT:
        yield "community_votes", f"{_show(votes)} is more than the store can hold ({MAX_STORED_INT:,})"
    if isinstance(slug, str):
        if slug in first_of_slug:
            yield "slug", f"also used by item {first_of_slug[slug] + 1}: each slug may appear once in a file"
        else:
            first_of_slug[slug] = index
    yield from _category_problems(item)
    if _storable(item):  # the usual case: no need to name every string's place
        return
    for where, text in _strings(item, ""):
        if where == "category" or where.endswith(".category"):
            continue  # the category rule says it, NUL included
        if "\x00" in text:
            yield where, "contains a NUL character (\\u0000), which the database cannot store: remove it"
        elif not _encodable(text):
            yield where, "contains an unpaired surrogate (a broken \\ud8xx escape): fix the text's encoding"


def _category_problems(item: dict) -> Iterator[tuple[str, str]]:
    """Category names by the one rule of digest.categories: the contract's pattern over the whole name."""
    names = [("category", item.get("category"), True)]
    if isinstance(item.get("tools"), list):
        names += [(f"tools[{n}].category", tool.get("category"), False)
                  for n, tool in enumerate(item["tools"]) if isinstance(tool, dict)]
    for where, name, required in names:
        problem = category_problem(name, required=required) if isinstance(name, str) else None
        if problem:
            yield where, f"{_show(name)} {problem}"


def _category_text(error: ValidationError) -> bool:
    """A schema error about a category's text, which _category_problems reports in the rule's words."""
    path = list(error.absolute_path)
    return bool(path) and path[-1] == "category" and error.validator in ("pattern", "minLength", "maxLength")


def _schema_problem(error: ValidationError) -> tuple[str, str]:
    where = _where(list(error.absolute_path)[1:])
    return where, _describe(error, where)


def _describe(error: ValidationError, where: str) -> str:
    """jsonschema's message, without quoting a 10 MB value back at the reader."""
    value, limit = error.instance, error.validator_value
    match error.validator:
        case "maxLength":
            return f"is {len(value)} characters long, more than the maximum of {limit}: shorten it"
        case "minLength":
            return f"is {len(value)} characters long; it needs at least {limit}"
        case "minItems":
            return f"has {len(value)} entries; it needs at least {limit}"
        case "maxItems":
            return f"has {len(value)} entries, more than the maximum of {limit}"
        case "type":
            expected = " or ".join(limit) if isinstance(limit, list) else limit
            return f"{_show(value)} is {_json_type(value)}; it must be {_article(expected)}"
        case "pattern":
            field = where.rsplit(".", 1)[-1]
            return f"{_show(value)} does not match {limit}{_PATTERN_HINTS.get(field, '')}"
        case "enum":
            return f"{_show(value)} is not one of {', '.join(json.dumps(option) for option in limit)}"
    return _clip(error.message, 300)


def _item_label(item: object, index: int) -> str:
    slug = item.get("slug") if isinstance(item, dict) else None
    return f'item {index + 1} (slug "{_clip(slug, 80)}")' if isinstance(slug, str) else f"item {index + 1}"


def _where(path: Sequence[object]) -> str:
    """["tools", 0, "reviews", 1, "score"] -> "tools[0].reviews[1].score"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _storable(value: object) -> bool:
    """True when no string in ``value`` holds a NUL or an unpaired surrogate: one pass without the places
    `_strings` names (those cost 50 µs a pushed comparison, for the rare body that has one)."""
    stack = [value]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if "\x00" in value or not (value.isascii() or _encodable(value)):
                return False
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return True


def _strings(value: object, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, inner in value.items():
            yield from _strings(inner, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for position, inner in enumerate(value):
            yield from _strings(inner, f"{where}[{position}]")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _show(value: object) -> str:
    return quoted(value, 80)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json_type(value: object) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                       (list, "an array"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null"


def _article(name: str) -> str:
    return ("an " if name[:1] in "aeiou" else "a ") + name
