"""Comparison import: the JSON file the comparison site hands over (contracts/comparison.schema.json).

The file is checked whole before anything is written: valid JSON, valid by the schema, dates in RFC 3339
with an offset, web URLs, each slug once. One bad item refuses the file, with every problem listed (the
first 20) by item, slug and field. A good file is imported in one transaction, upserting by slug.

Text is stored exactly as the file gives it — markup, ``{{ }}``, emoji, right-to-left — because it is
the site's words; escaping is the renderer's job (Jinja autoescape), not the importer's.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, ValidationError
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import selectinload
from sqlmodel import Session

from digest.categories import category_problem
from digest.importing.errors import InvalidImport
from digest.progress import NullProgress, Progress
from digest.quoting import quoted
from storage.db import session_scope
from storage.models import Comparison, Review, Tool

# 50 MB: a weekly export is kilobytes, a full back-catalogue a few MB; past this the file is a mistake
# and json.loads would hold several times its size in memory.
MAX_FILE_BYTES = 50 * 1024 * 1024
MAX_REPORTED = 20  # problems listed in full; the rest are counted
PROGRESS_ITEMS = 100  # items per progress report: reports go per batch, never per item (digest.progress)

SCHEMA = json.loads((resources.files("digest") / "contracts" / "comparison.schema.json").read_text("utf-8"))
_VALIDATOR = Draft202012Validator(SCHEMA)

# RFC 3339 section 5.6; jsonschema checks "format": "date-time" only when an extra package is installed.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?P<offset>[Zz]|[+-]\d{2}:\d{2})?")
_PATTERN_HINTS = {
    "slug": ": use lower-case letters, digits and hyphens, starting with a letter or digit",
    "url": ": it must start with http:// or https://",
}

COMPARISON_FIELDS = {"title": None, "url": None, "category": None, "published_at": None, "community_votes": None}
TOOL_FIELDS = {"name": None, "tagline": "", "summary": "", "category": "", "pricing": "", "entry_price": "",
               "panel_ship_pct": None, "community_ship_pct": None}  # field: value when the file leaves it out
REVIEW_FIELDS = {"persona": None, "score": None, "verdict": None, "text": None}


@dataclass(frozen=True)
class ComparisonImport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0


def import_comparisons(*, engine: Engine, path: Path, now: datetime,
                       progress: Progress | None = None) -> ComparisonImport:
    """Upsert the comparisons of ``path`` by slug, in one transaction; raises InvalidImport, writing nothing.

    A known slug gets the file's title, url, category, published_at and community_votes, and its tools
    and reviews are replaced; ``created_at`` stays, ``updated_at`` becomes ``now``. An item identical to
    what is stored is left alone (counted as unchanged). ``progress`` hears of the items written, once
    every PROGRESS_ITEMS, after the file passed every check.
    """
    items = load_comparisons(path)
    progress = progress or NullProgress()
    progress.begin(path.name, total=len(items), unit="imported")
    try:
        counts = _upsert(engine=engine, items=items, now=now, progress=progress)
    finally:
        progress.end()
    return ComparisonImport(**counts)


def _upsert(*, engine: Engine, items: list[dict], now: datetime, progress: Progress) -> Counter[str]:
    counts: Counter[str] = Counter()
    with session_scope(engine) as session:
        stored = _stored(session, [item["slug"] for item in items])
        for done, item in enumerate(items, 1):
            columns, tools = _columns(item), _tools(item)
            current = stored.get(item["slug"])
            if current is None:
                session.add(Comparison(slug=item["slug"], **columns, tools=_new_tools(tools),
                                       created_at=now, updated_at=now))
                counts["created"] += 1
            elif _content(current) == (columns, tools):
                counts["unchanged"] += 1
            else:
                for field, value in columns.items():
                    setattr(current, field, value)
                current.tools = _new_tools(tools)  # delete-orphan: the old tools and reviews go
                current.updated_at = now
                counts["updated"] += 1
            if done % PROGRESS_ITEMS == 0:
                progress.advance(PROGRESS_ITEMS)
    progress.advance(len(items) % PROGRESS_ITEMS)  # the rest, once they are committed
    return counts


def load_comparisons(path: Path) -> list[dict]:
    """The items of a comparison file, as given, once every check passed; raises InvalidImport."""
    data = _read(path)
    problems = list(_problems(data))
    if problems:
        lines = [f"{path.name}: {problem}" for problem in problems[:MAX_REPORTED]]
        raise InvalidImport(lines, total=len(problems))
    return data


def refused_categories(engine: Engine) -> dict[str, int]:
    """Categories in the store that the contract now refuses, with how many comparisons carry each.

    Comparisons imported before the contract forbade ``;``, ``,`` and line breaks may carry one. Nobody
    can follow such a category on its own (the signup and the preference form do not offer it); readers
    of every category still get those comparisons. Importing them again with a good name fixes them.
    """
    with session_scope(engine) as session:
        rows = session.execute(select(Comparison.category, func.count()).group_by(Comparison.category)).all()
    return {name: count for name, count in rows if category_problem(name)}


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
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise InvalidImport([f"{path.name}: line {line}: byte {raw[exc.start]:#04x} is not UTF-8: "
                             "save the file as UTF-8"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidImport([f"{path.name}: line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}"]) from None
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, arrays nested thousands deep
        raise InvalidImport([f"{path.name}: not valid JSON for an import: {exc}"]) from None


def _problems(data: object) -> Iterator[str]:
    """Every problem of the file, as "item N (slug "x"): field: what is wrong", in item order."""
    if not isinstance(data, list):
        yield f"the file must hold a JSON array of comparisons ([{{…}}, …]), not {_json_type(data)}"
        return
    found: list[tuple[int, str]] = [(error.absolute_path[0], _schema_problem(error))
                                    for error in _VALIDATOR.iter_errors(data) if not _category_text(error)]
    first_of_slug: dict[str, int] = {}
    for index, item in enumerate(data):
        if isinstance(item, dict):
            found.extend((index, problem) for problem in _item_problems(item, index, first_of_slug))
    for index, problem in sorted(found, key=lambda pair: pair[0]):
        yield f"{_item_label(data[index], index)}: {problem}"


def _item_problems(item: dict, index: int, first_of_slug: dict[str, int]) -> Iterator[str]:
    """What the schema cannot say: real dates with offsets, usable URLs, unique slugs, storable text."""
    published, url, slug = item.get("published_at"), item.get("url"), item.get("slug")
    if isinstance(published, str):
        try:
            parse_published_at(published)
        except ValueError as exc:
            yield f"published_at: {exc}"
    if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
        if not urlsplit(url).hostname:
            yield f"url: {_show(url)} has no host name"
        elif any(char.isspace() or ord(char) < 32 or ord(char) == 127 for char in url):
            yield f"url: {_show(url)} contains a space or control character: percent-encode it"
    if isinstance(slug, str):
        if slug in first_of_slug:
            yield f"slug: also used by item {first_of_slug[slug] + 1}: each slug may appear once in a file"
        else:
            first_of_slug[slug] = index
    yield from _category_problems(item)
    for where, text in _strings(item, ""):
        if where == "category" or where.endswith(".category"):
            continue  # the category rule says it, NUL included
        if "\x00" in text:
            yield f"{where}: contains a NUL character (\\u0000), which the database cannot store: remove it"
        elif not _encodable(text):
            yield f"{where}: contains an unpaired surrogate (a broken \\ud8xx escape): fix the text's encoding"


def _category_problems(item: dict) -> Iterator[str]:
    """Category names by the one rule of digest.categories: the contract's pattern over the whole name."""
    names = [("category", item.get("category"), True)]
    if isinstance(item.get("tools"), list):
        names += [(f"tools[{n}].category", tool.get("category"), False)
                  for n, tool in enumerate(item["tools"]) if isinstance(tool, dict)]
    for where, name, required in names:
        problem = category_problem(name, required=required) if isinstance(name, str) else None
        if problem:
            yield f"{where}: {_show(name)} {problem}"


def _category_text(error: ValidationError) -> bool:
    """A schema error about a category's text, which _category_problems reports in the rule's words."""
    path = list(error.absolute_path)
    return bool(path) and path[-1] == "category" and error.validator in ("pattern", "minLength", "maxLength")


def _schema_problem(error: ValidationError) -> str:
    where = _where(list(error.absolute_path)[1:])
    return f"{where}: {_describe(error, where)}" if where else _describe(error, where)


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


# -- writing ---------------------------------------------------------------------------------------------

def _stored(session: Session, slugs: list[str]) -> dict[str, Comparison]:
    found: dict[str, Comparison] = {}
    for start in range(0, len(slugs), 500):  # 500 per IN list: well under SQLite's 32,766 parameters
        query = (select(Comparison).where(Comparison.slug.in_(slugs[start:start + 500]))
                 .options(selectinload(Comparison.tools).selectinload(Tool.reviews)))
        found.update((comparison.slug, comparison) for comparison in session.execute(query).scalars())
    return found


def _columns(item: dict) -> dict:
    columns = {field: item.get(field, default) for field, default in COMPARISON_FIELDS.items()}
    columns["published_at"] = parse_published_at(item["published_at"])
    return columns


def _tools(item: dict) -> list[tuple[dict, list[dict]]]:
    return [({field: tool.get(field, default) for field, default in TOOL_FIELDS.items()},
             [{field: review[field] for field in REVIEW_FIELDS} for review in tool["reviews"]])
            for tool in item["tools"]]


def _content(comparison: Comparison) -> tuple[dict, list[tuple[dict, list[dict]]]]:
    """A stored comparison in the shape of ``_columns`` and ``_tools``, to see whether anything changed."""
    columns = {field: getattr(comparison, field) for field in COMPARISON_FIELDS}
    tools = [({field: getattr(tool, field) for field in TOOL_FIELDS},
              [{field: getattr(review, field) for field in REVIEW_FIELDS} for review in tool.reviews])
             for tool in comparison.tools]
    return columns, tools


def _new_tools(tools: list[tuple[dict, list[dict]]]) -> list[Tool]:
    return [Tool(position=position, **columns,
                 reviews=[Review(position=order, **review) for order, review in enumerate(reviews)])
            for position, (columns, reviews) in enumerate(tools)]
