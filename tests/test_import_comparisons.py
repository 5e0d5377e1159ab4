"""The comparison import: the shared contract, upserts, whole-file refusals, text kept verbatim."""

from __future__ import annotations

import copy
import json
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from digest.categories import MAX_LENGTH, category_problem
from digest.importing import InvalidImport, import_comparisons, load_comparisons
from digest.importing.comparison_file import SCHEMA
from storage.db import session_scope
from storage.models import Comparison, Review, Tool

PACKAGED_SCHEMA = resources.files("digest") / "contracts" / "comparison.schema.json"
DATA = Path(__file__).parent / "data" / "import"
NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
LATER = datetime(2026, 11, 26, 8, 0, tzinfo=timezone.utc)
EXAMPLE_SLUG = "code-llama-4-vs-mistral-8x22b-v2"


def example() -> list[dict]:
    return json.loads((DATA / "example.json").read_text(encoding="utf-8"))


def write(tmp_path: Path, items, name: str = "comparisons.json") -> Path:
    path = tmp_path / name
    path.write_text(items if isinstance(items, str) else json.dumps(items, ensure_ascii=False), encoding="utf-8")
    return path


def another(slug: str, *, category: str = "Writing") -> dict:
    item = copy.deepcopy(example()[0])
    item.update(slug=slug, title=f"{slug} title", url=f"https://verdicts.example.com/compare/{slug}", category=category)
    return item


def counts(engine) -> tuple[int, int, int]:
    with session_scope(engine) as session:
        return tuple(session.execute(select(func.count()).select_from(table)).scalar_one()
                     for table in (Comparison, Tool, Review))


def stored(engine, slug: str) -> Comparison:
    with session_scope(engine) as session:
        comparison = session.execute(select(Comparison).where(Comparison.slug == slug)).scalar_one()
        for tool in comparison.tools:
            tool.reviews  # load while the session is open
        return comparison


# -- the contract ------------------------------------------------------------------------------------------

def test_shared_example_imports(engine, tmp_path):
    "the contract's example.json imports: one comparison, two tools, four reviews each, in file order"
    result = import_comparisons(engine=engine, path=DATA / "example.json", now=NOW)

    assert (result.created, result.updated, result.unchanged) == (1, 0, 0)
    assert counts(engine) == (1, 2, 8)
    comparison = stored(engine, EXAMPLE_SLUG)
    assert comparison.published_at == datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc)
    assert comparison.created_at == comparison.updated_at == NOW
    assert [tool.name for tool in comparison.tools] == ["Code Llama 4 (70B & 400B)", "Mistral 8x22B v2"]
    mistral = comparison.tools[1]
    assert (mistral.position, mistral.panel_ship_pct, mistral.community_ship_pct, mistral.entry_price) == (1, 75, None, "Free")
    assert [(r.persona, r.score, r.verdict) for r in mistral.reviews] == [
        ("Builder", 82, "ship"), ("Skeptic", 75, "ship"), ("Futurist", 78, "ship"), ("Founder", 55, "skip")]


def test_demo_comparisons_are_valid():
    "the demo data shipped with the package passes every check of the import"
    items = load_comparisons(Path(str(resources.files("digest.demo") / "data" / "comparisons.json")))
    assert len(items) >= 10
    assert len({item["category"] for item in items}) == 5
    for item in items:
        for tool in item["tools"]:
            ships = sum(review["verdict"] == "ship" for review in tool["reviews"])
            assert tool["panel_ship_pct"] == ships * 100 // len(tool["reviews"]), (item["slug"], tool["name"])


# -- upserts -----------------------------------------------------------------------------------------------

def test_reimport_updates_in_place(engine, tmp_path):
    "re-importing a changed file updates the comparison by slug: no duplicate, new title, tools replaced"
    import_comparisons(engine=engine, path=DATA / "example.json", now=NOW)
    changed = example()
    changed[0]["title"] = "Code Llama 4 vs Mistral 8x22B v2 (revised)"
    changed[0]["tools"] = changed[0]["tools"][::-1] + [dict(changed[0]["tools"][0], name="Qwen Coder", reviews=[])]
    changed.append(another("new-one"))

    result = import_comparisons(engine=engine, path=write(tmp_path, changed), now=LATER)

    assert (result.created, result.updated, result.unchanged) == (1, 1, 0)
    assert counts(engine) == (2, 3 + 2, 8 + 8)
    comparison = stored(engine, EXAMPLE_SLUG)
    assert comparison.title == "Code Llama 4 vs Mistral 8x22B v2 (revised)"
    assert [(tool.position, tool.name) for tool in comparison.tools] == [
        (0, "Mistral 8x22B v2"), (1, "Code Llama 4 (70B & 400B)"), (2, "Qwen Coder")]
    assert (comparison.created_at, comparison.updated_at) == (NOW, LATER)


def test_each_version_is_stored_exactly_whatever_it_adds_drops_or_moves(engine, tmp_path):
    "tools and reviews added, dropped, reordered and edited over five versions: each time the store holds that version and nothing else"
    base = example()[0]
    mistral, llama = base["tools"][1], base["tools"][0]
    third = {key: value for key, value in dict(llama, name="Qwen Coder", reviews=llama["reviews"][:1]).items()
             if key != "panel_ship_pct"}
    versions = [
        [llama, mistral],
        [llama, dict(mistral, reviews=mistral["reviews"][:2]), third],  # reviews dropped, a tool added
        [dict(third, reviews=llama["reviews"] + mistral["reviews"]), llama],  # moved, reviews added, one tool gone
        [dict(llama, tagline="new", reviews=[dict(llama["reviews"][0], score=1)] + llama["reviews"][1:]), mistral],
        [dict(mistral, reviews=[]), dict(llama, reviews=[])],  # no reviews left
    ]
    for n, tools in enumerate(versions):
        import_comparisons(engine=engine, path=write(tmp_path, [dict(base, tools=tools)]), now=NOW)
        comparison = stored(engine, EXAMPLE_SLUG)
        assert comparison.version == n + 1
        assert [(tool.position, tool.name, tool.tagline, tool.panel_ship_pct) for tool in comparison.tools] == [
            (position, tool["name"], tool["tagline"], tool.get("panel_ship_pct")) for position, tool in enumerate(tools)]
        assert [[(r.position, r.persona, r.score, r.verdict, r.text) for r in tool.reviews] for tool in comparison.tools] == [
            [(order, r["persona"], r["score"], r["verdict"], r["text"]) for order, r in enumerate(tool["reviews"])]
            for tool in tools]
        assert counts(engine) == (1, len(tools), sum(len(tool["reviews"]) for tool in tools))


def test_reimport_of_the_same_file_changes_nothing(engine):
    "importing the same file twice counts it unchanged and keeps updated_at"
    import_comparisons(engine=engine, path=DATA / "example.json", now=NOW)
    result = import_comparisons(engine=engine, path=DATA / "example.json", now=LATER)

    assert (result.created, result.updated, result.unchanged) == (0, 0, 1)
    assert stored(engine, EXAMPLE_SLUG).updated_at == NOW
    assert counts(engine) == (1, 2, 8)


def test_published_at_in_another_offset_is_stored_as_utc(engine, tmp_path):
    "a Z or +05:30 published_at is stored as the same instant in UTC"
    items = [another("in-india"), another("in-zulu")]
    items[0]["published_at"] = "2026-11-23T15:00:00+05:30"
    items[1]["published_at"] = "2026-11-23T09:30:00.250Z"
    import_comparisons(engine=engine, path=write(tmp_path, items), now=NOW)

    assert stored(engine, "in-india").published_at == datetime(2026, 11, 23, 9, 30, tzinfo=timezone.utc)
    assert stored(engine, "in-zulu").published_at == datetime(2026, 11, 23, 9, 30, 0, 250_000, tzinfo=timezone.utc)


# -- refusals ----------------------------------------------------------------------------------------------

def _score_130(items):
    items[2]["tools"][0]["reviews"][1]["score"] = 130


def _missing_title(items):
    del items[2]["title"]


def _score_as_text(items):
    items[2]["tools"][1]["reviews"][0]["score"] = "85"


def _no_offset(items):
    items[2]["published_at"] = "2026-11-23T09:30:00"


def _javascript_url(items):
    items[2]["url"] = "javascript:alert(1)"


def _duplicate_slug(items):
    items[2]["slug"] = items[0]["slug"]


@pytest.mark.parametrize("damage, field, message", [
    (_score_130, "tools[0].reviews[1].score", "130 is greater than the maximum of 100"),
    (_missing_title, None, "'title' is a required property"),
    (_score_as_text, "tools[1].reviews[0].score", '"85" is a string; it must be an integer'),
    (_no_offset, "published_at", "has no UTC offset"),
    (_javascript_url, "url", "must start with http:// or https://"),
    (_duplicate_slug, "slug", "also used by item 1"),
])
def test_a_bad_item_refuses_the_whole_file(engine, tmp_path, damage, field, message):
    "one bad item 3 refuses the file, naming file, item, slug and field, and writes nothing"
    import_comparisons(engine=engine, path=DATA / "example.json", now=NOW)
    before = counts(engine)
    items = [another("first-one"), another("second-one"), another("third-one")]
    damage(items)
    slug = items[2]["slug"]

    with pytest.raises(InvalidImport) as refused:
        import_comparisons(engine=engine, path=write(tmp_path, items), now=LATER)

    where = f"{field}: " if field else ""
    assert str(refused.value).startswith(f'comparisons.json: item 3 (slug "{slug}"): {where}')
    assert message in str(refused.value)
    assert counts(engine) == before


def test_score_130_reads_like_the_style_guide(tmp_path):
    "the message for an out-of-range score is exactly the one the style guide shows"
    items = [another("first-one"), another("second-one"), another("x")]
    items[2]["tools"][0]["reviews"][1]["score"] = 130
    with pytest.raises(InvalidImport) as refused:
        load_comparisons(write(tmp_path, items))
    assert str(refused.value) == ('comparisons.json: item 3 (slug "x"): tools[0].reviews[1].score: '
                                  "130 is greater than the maximum of 100")


def test_a_good_first_item_is_not_written_when_the_second_is_bad(engine, tmp_path):
    "item 1 is fine and item 2 is bad: nothing at all is written, not even item 1"
    items = [another("fine-one"), another("bad-one")]
    items[1]["tools"] = items[1]["tools"][:1]

    with pytest.raises(InvalidImport, match=r'item 2 \(slug "bad-one"\): tools: has 1 entries; it needs at least 2'):
        import_comparisons(engine=engine, path=write(tmp_path, items), now=NOW)
    assert counts(engine) == (0, 0, 0)


def test_invalid_json_names_line_and_column(engine, tmp_path):
    "a file that is not JSON is refused with its line and column"
    path = write(tmp_path, '[\n  {"slug": "a",\n   "title": "A" "url": "https://x.example"}\n]')
    with pytest.raises(InvalidImport) as refused:
        import_comparisons(engine=engine, path=path, now=NOW)
    assert str(refused.value) == "comparisons.json: line 3, column 17: not valid JSON: Expecting ',' delimiter"
    assert counts(engine) == (0, 0, 0)


def test_every_problem_is_listed_and_the_list_is_capped(tmp_path):
    "a file with 30 bad items lists the first 20 problems in item order and counts the rest"
    items = [another(f"item-{n}") for n in range(30)]
    for item in items:
        item["tools"][0]["reviews"][0]["verdict"] = "maybe"
    with pytest.raises(InvalidImport) as refused:
        load_comparisons(write(tmp_path, items))
    lines = str(refused.value).splitlines()
    assert lines[0] == ('comparisons.json: item 1 (slug "item-0"): tools[0].reviews[0].verdict: '
                        '"maybe" is not one of "ship", "skip"')
    assert lines[19].startswith('comparisons.json: item 20 (slug "item-19")')
    assert lines[20] == "… and 10 more problems of the same kinds"
    assert refused.value.total == 30


def test_a_huge_text_is_refused_without_quoting_it(tmp_path):
    "a 10 MB review text is refused by its length, and the message stays one short line"
    items = [another("huge")]
    items[0]["tools"][0]["reviews"][0]["text"] = "x" * 10_000_001
    with pytest.raises(InvalidImport) as refused:
        load_comparisons(write(tmp_path, items))
    assert str(refused.value) == ('comparisons.json: item 1 (slug "huge"): tools[0].reviews[0].text: '
                                  "is 10000001 characters long, more than the maximum of 10000: shorten it")


def test_a_file_over_the_size_limit_is_refused_before_reading(tmp_path, monkeypatch):
    "a file bigger than MAX_FILE_BYTES is refused up front with its size"
    import digest.importing.comparison_file as comparison_file

    monkeypatch.setattr(comparison_file, "MAX_FILE_BYTES", 1024)
    path = write(tmp_path, [another("big")] * 3)
    with pytest.raises(InvalidImport, match=r"comparisons.json: the file is \d+ MB, more than the 0 MB"):
        load_comparisons(path)


@pytest.mark.parametrize("text, problem", [
    ('{"slug": "a"}', "the file must hold a JSON array of comparisons"),
    ('[{"slug": "a", "title": "A", "published_at": "2026-11-23T09:30:00+00:00", "url": "https://",'
     ' "category": "Writing", "tools": []}]', 'url: "https://" has no host name'),
    ('["not an object"]', '"not an object" is a string; it must be an object'),
    ('[{"slug": "a\\u0000"}]', 'slug: contains a NUL character'),
])
def test_other_refusals_say_what_is_wrong(tmp_path, text, problem):
    "top-level shape, empty hosts, wrong item types and NUL characters are each named"
    with pytest.raises(InvalidImport) as refused:
        load_comparisons(write(tmp_path, text))
    assert problem in str(refused.value)


@pytest.mark.parametrize("published_at", [
    "2026-11-23", "2026-11-23T09:30", "23/11/2026 09:30+00:00", "2026-13-01T00:00:00Z", "20261123T093000+0000",
])
def test_published_at_must_be_rfc_3339(tmp_path, published_at):
    "a published_at that is not an RFC 3339 date-time with an offset is refused"
    items = [another("dated")]
    items[0]["published_at"] = published_at
    with pytest.raises(InvalidImport, match=r'item 1 \(slug "dated"\): published_at: '):
        load_comparisons(write(tmp_path, items))


# -- text kept as given ------------------------------------------------------------------------------------

ODD_TEXTS = [
    "<script>alert('x')</script><b>bold</b> &amp; <!-- comment -->",
    "{{ subscriber.name }} {% if x %}{{ 7*7 }}{% endif %} *|FNAME|* -name-",
    "bell\x07 tab\t vertical\x0b escape\x1b[31m newline\n carriage\r",
    "🚀 ship it 👩🏽‍💻 — “quotes” ‘single’ … ½",
    "مرحبا بالعالم \u202eevil\u202c עברית",
    "",
]


def test_odd_but_valid_text_is_stored_verbatim(engine, tmp_path):
    "markup, template syntax, control characters, emoji and RTL text are stored exactly as given"
    items = [another("odd-text")]
    tool = items[0]["tools"][0]
    items[0]["title"] = ODD_TEXTS[0]
    tool["name"], tool["tagline"], tool["summary"] = ODD_TEXTS[1], ODD_TEXTS[2], ODD_TEXTS[4]
    for review, text in zip(tool["reviews"], ODD_TEXTS[2:]):
        review["text"] = text

    import_comparisons(engine=engine, path=write(tmp_path, items), now=NOW)

    comparison = stored(engine, "odd-text")
    kept = comparison.tools[0]
    assert comparison.title == ODD_TEXTS[0]
    assert (kept.name, kept.tagline, kept.summary) == (ODD_TEXTS[1], ODD_TEXTS[2], ODD_TEXTS[4])
    assert [review.text for review in kept.reviews] == ODD_TEXTS[2:]


def test_packaged_schema_is_the_one_the_importer_uses():
    "the importer validates against the packaged copy of the contract"
    assert SCHEMA == json.loads(PACKAGED_SCHEMA.read_text("utf-8"))


# -- category names: one rule (digest.categories), read from the packaged contract ----------------------------

def test_the_category_rule_is_read_from_the_packaged_contract_for_comparisons_and_tools():
    "the rule's limits are the contract's; a tool's optional category has the same pattern with blank allowed"
    category = SCHEMA["$defs"]["comparison"]["properties"]["category"]
    tool_category = SCHEMA["$defs"]["tool"]["properties"]["category"]
    assert MAX_LENGTH == category["maxLength"] == tool_category["maxLength"] == 100
    assert category["pattern"] == "^[^;,\\r\\n]+$" and tool_category["pattern"] == "^[^;,\\r\\n]*$"
    assert category_problem("", required=False) is None and category_problem("") is not None


NAMES = st.text(alphabet=st.sampled_from("aZé 🙂;,\r\n\t\x00\u2028"), max_size=8) | st.builds(
    lambda n, tail: "x" * n + tail, st.integers(95, 102), st.sampled_from(["", ";", "\n"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=NAMES)
def test_the_importer_the_rule_and_the_contract_agree_on_every_category_name(tmp_path, name):
    "for any name: the importer refuses it as a comparison's category exactly when category_problem names a problem"
    expected_ok = (0 < len(name) <= 100 and name.strip() != "" and not set(name) & set(";,\r\n\x00"))
    assert (category_problem(name) is None) == expected_ok
    item = another("named")
    item["category"] = name
    try:
        load_comparisons(write(tmp_path, [item]))
        accepted = True
    except InvalidImport as exc:
        accepted = False
        assert str(exc).startswith('comparisons.json: item 1 (slug "named"): category: '), str(exc)
        assert len(str(exc).splitlines()) == 1  # said once, by the rule, not again by the schema
    assert accepted == expected_ok


def test_a_category_with_a_final_line_break_is_refused_though_jsonschema_lets_it_pass(tmp_path):
    "\"Writing\\n\" satisfies the schema's pattern under Python's re ($ before a final newline); the import refuses it"
    from jsonschema import Draft202012Validator

    assert list(Draft202012Validator({"pattern": "^[^;,\\r\\n]+$"}).iter_errors("Writing\n")) == []
    with pytest.raises(InvalidImport, match=r'category: "Writing\\n" contains a line break'):
        load_comparisons(write(tmp_path, [another("final-newline", category="Writing\n")]))


def test_the_cli_warns_about_stored_categories_the_contract_now_refuses(tmp_path):
    "a comparison filed under \"AI; Agents\" before the rule: `digest comparisons import` imports, then names it on stderr"
    import subprocess
    import sys

    from storage.db import make_engine
    from storage.migrate import upgrade
    from tests.factories import add_comparison

    url = f"sqlite:///{tmp_path / 'digest.db'}"
    upgrade(url)
    env = {"DIGEST_DATABASE_URL": url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}

    def import_example() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "digest.cli", "comparisons", "import", str(DATA / "example.json")],
                              env=env, capture_output=True, text=True, timeout=60)

    clean = import_example()
    assert clean.returncode == 0 and "warning" not in clean.stderr
    engine = make_engine(url)
    for _ in range(2):
        add_comparison(engine, category="AI; Agents", published_at=NOW)
    engine.dispose()
    warned = import_example()
    assert warned.returncode == 0 and "example.json: 0 new, 0 updated, 1 unchanged" in warned.stdout
    assert 'warning: comparisons in the store are filed under categories the contract refuses: "AI; Agents" (2).' \
        in warned.stderr
    assert "import those comparisons again with the category renamed" in warned.stderr


# -- the compiled schema (the push API's fast check) never passes what jsonschema refuses -------------------

_JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats(allow_nan=False) | st.sampled_from(
        [0, 1, 50, 100, 101, -1, 1.0, 50.0, "", "ship", "skip", "maybe", "a;b", "ab\n", "Abc", "abc\n", "x" * 301,
         "😀" * 300, "😀" * 301, "https://x.example", "http://x\n", "ftp://x", "2026-11-23T09:30:00Z"])
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _places(value, path=()):
    """Every (path) in a JSON value, the value itself included."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, inner in items:
        yield from _places(inner, (*path, key))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_what_the_compiled_schema_passes_jsonschema_passes_too(data):
    """One comparison with one to three places replaced, removed or added to: when the compiled schema passes
    it, jsonschema finds nothing either (it decides, and words the problems, of all the compiled one refuses)."""
    from digest.importing.comparison_file import _PASSES, _VALIDATOR

    item = example()[0]
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(list(_places(item))[1:]))
        parent = item
        for key in path[:-1]:
            parent = parent[key]
        action = data.draw(st.sampled_from(["replace", "remove", "add"]))
        if action == "remove":
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[data.draw(st.sampled_from(["extra", "summary", "category", "community_votes"]))] = data.draw(_JSONISH)
        else:
            parent[path[-1]] = data.draw(_JSONISH)
    try:
        _PASSES([item])
    except Exception:
        return
    assert not list(_VALIDATOR.iter_errors([item])), item
