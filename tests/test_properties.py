"""Property-based tests (issue 6, item 4), Hypothesis with bounded examples: any schema-valid comparison
imports and renders; any text in any field renders without `<script`, compiles as MJML and forges no
substitution tag; any byte string or mutation of a valid token is refused, and tokens round-trip."""

from __future__ import annotations

import json
import string
from dataclasses import replace
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from digest.importing import import_comparisons
from digest.importing.comparison_file import _VALIDATOR
from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, TOKEN_TAG, BadToken, Signer
from digest.transports.base import fill
from storage.db import make_engine
from storage.migrate import upgrade
from tests.email_samples import ISSUE_DATE, WEEK, sample_renderer
from tests.test_hostile_content import assert_safe_html, loaded, plain_twin, tag_counts

NOW = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
BOUNDED = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])
HOSTILE_BITS = ["<script>", "</mj-text>", "<mj-raw>", "{{", "{%", "[%t%]", "[%", "%]", "<%", "%>", "\r\n", "\x00",
                "javascript:", "&amp;", "\u202e", "🚀", "שלום", '"', "'", "<", ">", "-->", "<!--", "]]>"]
# Any text the database can store (no NUL, no lone surrogate), with hostile fragments mixed in.
storable = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
text = st.lists(st.one_of(st.text(storable, max_size=20), st.sampled_from([b for b in HOSTILE_BITS if b != "\x00"])),
                max_size=8).map("".join)


def bounded(limit: int, *, min_size: int = 0):
    return text.map(lambda t: t[:limit]).filter(lambda t: len(t) >= min_size)


# A category name by the contract's rule (digest.categories): no ; , or line break, and not blank.
category = bounded(100).map(lambda t: t.translate(str.maketrans(";,\r\n", "    "))).filter(str.strip)


review = st.fixed_dictionaries({"persona": bounded(50, min_size=1), "score": st.integers(0, 100),
                                "verdict": st.sampled_from(["ship", "skip"]), "text": bounded(10000)})
tool = st.fixed_dictionaries(
    {"name": bounded(200, min_size=1), "tagline": bounded(500), "reviews": st.lists(review, max_size=4)},
    optional={"summary": bounded(5000), "category": category | st.just(""), "pricing": bounded(500),
              "entry_price": bounded(50), "panel_ship_pct": st.integers(0, 100),
              "community_ship_pct": st.none() | st.integers(0, 100)})
slug = st.from_regex(r"\A[a-z0-9][a-z0-9-]{0,40}\Z")
comparison = st.fixed_dictionaries(
    {"slug": slug, "title": bounded(300, min_size=1), "category": category,
     "published_at": st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1),
                                  timezones=st.just(timezone.utc)).map(lambda d: d.isoformat()),
     "url": st.from_regex(r"\Ahttps?://[a-z]{1,10}\.example\.com/[a-z0-9/._~-]{0,30}\Z"),
     "tools": st.lists(tool, min_size=2, max_size=4)},
    optional={"community_votes": st.integers(0, 10**6)})


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    url = f"sqlite:///{tmp_path_factory.mktemp('properties') / 'digest.db'}"
    upgrade(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def render(comparisons):
    return sample_renderer().render_segment(week=WEEK, issue_date=ISSUE_DATE, comparisons=comparisons, more_count=0,
                                            audience="all categories")


@BOUNDED
@given(item=comparison)
def test_any_schema_valid_comparison_imports_and_renders_safely(engine, tmp_path_factory, item):
    "any comparison valid by the contract imports, and renders inert: no <script, MJML compiles, no tag forged"
    assert not list(_VALIDATOR.iter_errors([item])), "the strategy makes schema-valid items"
    path = tmp_path_factory.mktemp("item") / "c.json"
    path.write_text(json.dumps([item], ensure_ascii=False), encoding="utf-8")
    import_comparisons(engine=engine, path=path, now=NOW)
    stored = loaded(engine, [item["slug"]])
    assert stored[0].title == item["title"], "text is stored verbatim"
    check_rendering(stored)


def check_rendering(comparisons):
    email = render(comparisons)  # raises RenderError if the MJML did not compile
    assert_safe_html(email.html)
    assert "\r" not in email.subject and "\n" not in email.subject
    twin = render([plain_twin(c) for c in comparisons])
    assert tag_counts(email.subject, email.html, email.text) == tag_counts(twin.subject, twin.html, twin.text)
    filled = fill(email.html + email.text, {TOKEN_TAG: "T", NAME_HTML_TAG: "N", NAME_TEXT_TAG: "N"})
    assert "[%" not in filled


@BOUNDED
@given(title=text, tagline=text, review_text=text, persona=text, category=text)
def test_any_text_in_any_field_renders_inert(title, tagline, review_text, persona, category):
    "any text (NUL and control characters included) in title, tagline, review, persona, category: inert output"
    from tests.email_samples import make_comparison, with_review, with_tool

    comparison = replace(make_comparison(title=title or "x"), category=category)
    comparison = with_review(with_tool(comparison, 0, tagline=tagline), 1, 0, text=review_text, persona=persona)
    check_rendering([comparison])


SIGNER = Signer("property-secret-key-0123456789abc")
ids = st.integers(min_value=0, max_value=2**53)


@BOUNDED
@given(subscriber_id=ids, delivery_id=st.none() | ids, tag=st.integers(0, 2**48 - 1),
       url=st.from_regex(r"\Ahttps://[a-z]{1,12}\.example\.com/[ -~]{0,40}\Z"))
def test_tokens_round_trip(subscriber_id, delivery_id, tag, url):
    "a recipient token reads back to its subscriber, delivery and tag; a link token to its URL"
    ref = SIGNER.read_recipient_token(SIGNER.recipient_token(subscriber_id=subscriber_id, delivery_id=delivery_id, tag=tag))
    assert (ref.subscriber_id, ref.delivery_id, ref.tag) == (subscriber_id, delivery_id, tag)
    assert SIGNER.read_link_token(SIGNER.link_token(url)) == url


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_any_byte_string_is_refused_as_a_token(raw):
    "random bytes, decoded any way, are never a valid recipient or link token"
    for candidate in (raw.decode("latin-1"), raw.hex(), raw.decode("utf-8", "replace")):
        with pytest.raises(BadToken):
            SIGNER.read_recipient_token(candidate)
        with pytest.raises(BadToken):
            SIGNER.read_link_token(candidate)


ALPHABET = string.ascii_letters + string.digits + "-_."


@settings(max_examples=300, deadline=None)
@given(subscriber_id=ids, data=st.data())
def test_any_mutation_of_a_valid_token_is_refused(subscriber_id, data):
    "a valid token with one character changed, inserted or deleted, or cut short, is refused"
    token = SIGNER.recipient_token(subscriber_id=subscriber_id, delivery_id=7, tag=5)
    at = data.draw(st.integers(0, len(token) - 1))
    kind = data.draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
    char = data.draw(st.sampled_from(ALPHABET))
    mutated = {"replace": token[:at] + char + token[at + 1:], "insert": token[:at] + char + token[at:],
               "delete": token[:at] + token[at + 1:], "truncate": token[:at]}[kind]
    if mutated == token:
        return
    try:
        ref = SIGNER.read_recipient_token(mutated)
    except BadToken:
        return
    # base64's last character carries spare bits: a change there may decode to the same bytes, never other ones.
    assert (ref.subscriber_id, ref.delivery_id, ref.tag) == (subscriber_id, 7, 5), f"{kind} at {at} read as another recipient"
