"""The tokens and URLs every email carries: a link already sent keeps working, a click reaches only the web
target it was made for, a token is read only as it was sent, and each URL is exactly the route the web app
answers (issue 22's mutation run found these promises held by no test of their own)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from itsdangerous import URLSafeSerializer

from digest.links import LINK_SALT, RECIPIENT_SALT, TOKEN_TAG, BadToken, Links, RecipientRef, Signer

KEY, OLD = "current-key-" + "k" * 20, "previous-key-" + "o" * 20
TARGET = "https://tools.example/compare/cursor-vs-copilot?utm_source=digest"


def test_a_click_link_reads_back_the_target_it_was_made_for():
    signer = Signer(KEY)
    assert signer.read_link_token(signer.link_token(TARGET)) == TARGET
    assert signer.read_link_token(signer.link_token("http://plain.example/")) == "http://plain.example/"


def test_click_links_in_emails_already_sent_keep_working_under_the_current_and_an_old_key():
    """The click token's salt is part of every link sent: changing it would break them all."""
    sent_before = URLSafeSerializer([OLD], salt=LINK_SALT).dumps(TARGET)
    assert Signer(KEY, [OLD]).read_link_token(sent_before) == TARGET
    with pytest.raises(BadToken):
        Signer(KEY).read_link_token(sent_before)


def test_a_recipient_token_is_no_click_link_and_a_click_link_names_no_recipient():
    signer = Signer(KEY)
    legacy_recipient = URLSafeSerializer([KEY], salt=RECIPIENT_SALT).dumps(TARGET)
    unsalted = URLSafeSerializer([KEY]).dumps(TARGET)
    for token in (legacy_recipient, unsalted):
        with pytest.raises(BadToken):
            signer.read_link_token(token)
    with pytest.raises(BadToken):
        signer.read_recipient_token(signer.link_token(TARGET))


@pytest.mark.parametrize("target", ["javascript:alert(1)", "ftp://files.example/x", "//evil.example/",
                                    "data:text/html,hi", ["https://x.example/"], 7, None])
def test_a_signed_target_that_is_not_a_web_address_is_refused(target):
    """Even under our own key (a leaked key, an editor's mistake), a click never redirects off the web."""
    token = URLSafeSerializer([KEY], salt=LINK_SALT).dumps(target)
    with pytest.raises(BadToken):
        Signer(KEY).read_link_token(token)


@pytest.mark.parametrize("token", ["", "not-a-token", "a.b", "eyJ4Ijoi.AAAA"])
def test_garbage_is_a_bad_click_link(token):
    with pytest.raises(BadToken):
        Signer(KEY).read_link_token(token)


def test_the_largest_id_the_store_holds_round_trips_in_a_recipient_token():
    """Subscriber and delivery ids are BIGINT: up to 2**63 - 1, nineteen digits."""
    signer = Signer(KEY)
    biggest = 2**63 - 1
    token = signer.recipient_token(subscriber_id=biggest, delivery_id=biggest, tag=biggest)
    assert signer.read_recipient_token(token) == RecipientRef(biggest, biggest, biggest)


def test_a_compact_token_already_sent_keeps_verifying():
    """The compact format as the module describes it, computed here on its own: an email sent since issue 20
    carries exactly this, so the key derivation and the MAC may never change."""
    key = hmac.new(OLD.encode(), b"digest.recipient.v2", hashlib.sha256).digest()
    mac = hmac.new(key, b"12.34.56", hashlib.sha256).digest()[:16]
    sent = "12.34.56." + base64.urlsafe_b64encode(mac).decode().rstrip("=")
    assert Signer(OLD).recipient_token(subscriber_id=12, delivery_id=34, tag=56) == sent
    assert Signer(KEY, [OLD]).read_recipient_token(sent) == RecipientRef(12, 34, 56)


@pytest.mark.parametrize("change", ["append a character base64 skips", "end on a character base64 skips"])
def test_a_recipient_token_is_read_only_exactly_as_it_was_sent(change):
    """base64 decoding skips characters outside its alphabet: a MAC with one more, or one of its own swapped
    for one, must still be a bad link (and never an error page)."""
    signer = Signer(KEY)
    token = signer.recipient_token(subscriber_id=12, delivery_id=34, tag=56)
    bad = token + "!" if change.startswith("append") else token[:-1] + "!"
    with pytest.raises(BadToken):
        signer.read_recipient_token(bad)


@pytest.mark.parametrize("base_url", ["https://digest.example", "https://digest.example/", "https://digest.example//"])
def test_every_url_is_the_route_under_the_base_url_with_one_slash(base_url):
    links = Links(base_url=base_url, signer=Signer(KEY))
    assert links.open_pixel() == f"https://digest.example/o/{TOKEN_TAG}.gif"
    assert links.unsubscribe("T") == "https://digest.example/u/T"
    assert links.preferences("T") == "https://digest.example/p/T"
    assert links.vote("cursor-vs-copilot", 2, "ship", "T") == "https://digest.example/v/T/cursor-vs-copilot/2/ship"
    assert links.archive("2027-W03") == "https://digest.example/archive/2027-W03"
    assert links.archive_index() == "https://digest.example/archive"


def test_a_base_url_under_a_path_keeps_all_of_it():
    links = Links(base_url="https://tools.example/AI-BOX/", signer=Signer(KEY))
    assert links.unsubscribe("T") == "https://tools.example/AI-BOX/u/T"


def test_a_click_url_carries_the_signed_target_and_the_recipient():
    links = Links(base_url="https://digest.example/", signer=Signer(KEY))
    url = links.click(TARGET, "T")
    prefix, _, recipient = url.partition("?r=")
    assert recipient == "T" and prefix.startswith("https://digest.example/c/")
    assert links.signer.read_link_token(prefix.removeprefix("https://digest.example/c/")) == TARGET


def test_a_slug_is_one_path_segment_of_a_vote_link_whatever_it_holds():
    """The route is /v/{token}/{slug}/{tool}/{choice}: a "/" left in a slug would move the tool and the choice."""
    links = Links(base_url="https://digest.example", signer=Signer(KEY))
    assert links.vote("a/b c", 1, "skip", "T") == "https://digest.example/v/T/a%2Fb%20c/1/skip"
