"""What the signup form and the confirmation link answer when a request is not what our pages send (issue 22's
mutation run found these held by no test): a field left out or sent as a file is an empty field, never an
error page, and the page for a bad confirmation link keeps its token out of Referer headers and caches."""

from __future__ import annotations

import html
import re
from datetime import datetime, timezone

import pytest

from digest.web.signup import MAX_CATEGORIES
from tests.factories import add_comparison


def csrf_token(web) -> str:
    page = web.get("/subscribe")
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def alert(response) -> str | None:
    """The one message the form shows (only for a field that exists: the template places it under its field)."""
    found = re.findall(r'<p class="notice warning" id="signup-error" role="alert">([^<]*)</p>', response.text)
    assert len(found) <= 1, found
    return html.unescape(found[0]) if found else None


def invalid(response) -> list[str]:
    """The ids of the inputs marked invalid, pointing at the message."""
    return re.findall(r'id="(\w+)"[^>]*aria-invalid="true" aria-describedby="signup-error"', response.text)


@pytest.mark.parametrize("email", ["left out", "sent as a file"])
def test_a_form_without_an_email_field_asks_for_the_address(web, email):
    data = {"csrf": csrf_token(web), "name": "Ada"}
    files = {"email": ("email.txt", b"ada@example.com", "text/plain")} if email == "sent as a file" else None
    answer = web.post("/subscribe", data=data, files=files)
    assert answer.status_code == 422 and alert(answer) == "Please enter your email address."
    assert invalid(answer) == ["email"]


@pytest.mark.parametrize("path", ["/confirm/not-a-token", "/confirm/1.2.3.AAAAAAAAAAAAAAAAAAAAAA"])
def test_a_bad_confirmation_link_gets_the_one_page_on_a_token_page(web, path):
    for answer in (web.get(path), web.post(path)):
        assert answer.status_code == 404
        assert answer.headers["referrer-policy"] == "no-referrer" and answer.headers["cache-control"] == "no-store"


def test_a_refused_form_comes_back_with_the_categories_the_reader_ticked(web):
    for category in ("Writing", "Security"):
        add_comparison(web.app.state.ctx.engine, category=category, published_at=datetime(2026, 11, 2, tzinfo=timezone.utc))
    answer = web.post("/subscribe", data={"csrf": csrf_token(web), "email": "not an address", "categories": ["writing"]})
    assert answer.status_code == 422
    assert '<input type="checkbox" name="categories" value="Writing" checked>' in answer.text
    assert '<input type="checkbox" name="categories" value="Security">' in answer.text


def test_the_blank_form_has_empty_fields_and_no_message(web):
    page = web.get("/subscribe")
    assert page.status_code == 200
    assert re.search(r'<input type="email" id="email" name="email" value="" ', page.text)
    assert re.search(r'<input type="text" id="name" name="name" value="" ', page.text)
    assert 'role="alert"' not in page.text and "aria-invalid" not in page.text



def test_a_json_field_given_twice_is_refused_saying_so(web):
    answer = web.post("/subscribe", content=b'{"email": "a@example.com", "email": "b@example.com"}',
                      headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"].startswith("The body is not valid JSON (a field is given twice); send {")


def test_more_categories_than_the_limit_are_refused_at_the_categories_and_the_limit_itself_is_not(web):
    "one over MAX_CATEGORIES: 400 with the message at the categories; exactly MAX_CATEGORIES (unknown here) are not "
    "refused for their number"
    too_many = [f"c{n}" for n in range(MAX_CATEGORIES + 1)]
    form = web.post("/subscribe", data={"csrf": csrf_token(web), "email": "ada@example.com", "categories": too_many})
    assert form.status_code == 400 and alert(form) == f"Choose at most {MAX_CATEGORIES} categories."
    as_json = web.post("/subscribe", json={"email": "ada@example.com", "categories": too_many})
    assert (as_json.status_code, as_json.json()) == (
        400, {"error": f"Choose at most {MAX_CATEGORIES} categories.", "field": "categories"})
    at_limit = web.post("/subscribe", json={"email": "ada@example.com", "categories": too_many[:MAX_CATEGORIES]})
    assert at_limit.status_code == 422 and at_limit.json()["error"].startswith("Unknown categories: ")


def test_unknown_categories_are_named_sorted_and_clipped_with_the_ones_to_choose_from(web):
    "the message names what is unknown (up to 300 characters of it) and what the store has, or 'none yet'"
    def refused(categories) -> dict:
        answer = web.post("/subscribe", json={"email": "ada@example.com", "categories": categories})
        assert answer.status_code == 422
        return answer.json()

    assert refused(["Writing"]) == {"error": "Unknown categories: writing. Choose from: none yet; none means all.",
                                    "field": "categories"}
    for category in ("Writing", "Security"):
        add_comparison(web.app.state.ctx.engine, category=category, published_at=datetime(2026, 11, 2, tzinfo=timezone.utc))
    assert refused(["Writing", "Nope", "Also Nope"])["error"] == (
        "Unknown categories: also nope, nope. Choose from: Security, Writing; none means all.")
    long_names = [f"{n:03d}" + "x" * 96 for n in range(4)]  # four of 99 characters: 402 with the separators
    assert refused(long_names)["error"] == (
        f"Unknown categories: {', '.join(long_names)[:300]}. Choose from: Security, Writing; none means all.")
    # An empty name (a form's blank box) is no category: with a known one, the signup goes through.
    assert web.post("/subscribe", json={"email": "ada@example.com", "categories": ["", "Writing"]}).status_code == 202


def test_a_category_from_before_the_contract_forbade_semicolons_is_not_offered(web):
    "following 'Writing; Security' would store it split in two: the form offers only the categories one can follow"
    for category in ("Writing; Security", "Security"):
        add_comparison(web.app.state.ctx.engine, category=category, published_at=datetime(2026, 11, 2, tzinfo=timezone.utc))
    offered = re.findall(r'name="categories" value="([^"]*)"', web.get("/subscribe").text)
    assert offered == ["Security"]
