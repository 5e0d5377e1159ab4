"""Recipient tokens on the unsubscribe and preference pages: forgery, tampering, key rotation, no expiry."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings as hypothesis_settings, strategies as st
from itsdangerous import BadData, URLSafeSerializer

from digest.links import RECIPIENT_SALT, BadToken, RecipientRef, Signer, _CurrentKey
from digest.web import create_app
from storage.db import make_engine
from storage.models import SubscriberStatus
from tests.factories import RecordingTransport, add_subscribers, link_tags, recipient_token
from tests.fixtures_web import web_settings
from tests.test_web_subscriber import engine_of, subscriber, token_for

SECRET = "web-test-secret-key-0123456789"  # tests.fixtures_web.web_settings


def flip(text: str, index: int) -> str:
    """TEXT with the character at INDEX replaced by another base64url character."""
    return text[:index] + ("B" if text[index] == "A" else "A") + text[index + 1:]


def bad_tokens(web, subscriber_id: int) -> dict[str, str]:
    good = token_for(web, subscriber_id)
    tag = link_tags(engine_of(web), [subscriber_id])[subscriber_id]
    value, signature = good.rsplit(".", 1)  # "{subscriber}.{delivery}.{tag}" and its MAC (digest.links)
    gone, = add_subscribers(engine_of(web), 1)
    legacy = URLSafeSerializer(SECRET, salt=RECIPIENT_SALT).dumps([subscriber_id, None, tag])  # before issue 20
    legacy_payload, legacy_signature = legacy.split(".")
    return {
        "forged (another key)": Signer("someone-elses-secret-key-000").recipient_token(
            subscriber_id=subscriber_id, delivery_id=None, tag=tag),
        # What a deleted subscriber's link carries once their id is someone else's (a restored backup).
        "the id with another row's tag": Signer(SECRET).recipient_token(
            subscriber_id=subscriber_id, delivery_id=None, tag=tag ^ 1),
        "a link from before tags, for a row stored since": URLSafeSerializer(SECRET, salt=RECIPIENT_SALT).dumps(
            [subscriber_id, None]),
        "an old-format link of another key": URLSafeSerializer("someone-elses-secret-key-000",
                                                               salt=RECIPIENT_SALT).dumps([subscriber_id, None, tag]),
        # The middle of each part: the last base64 character may only carry padding bits.
        "altered signature": f"{value}.{flip(signature, len(signature) // 2)}",
        "altered payload": f"{subscriber_id}.-.{tag ^ 2}.{signature}",
        "another subscriber's payload": f"{token_for(web, gone).rsplit('.', 1)[0]}.{signature}",
        "altered old-format signature": f"{legacy_payload}.{flip(legacy_signature, len(legacy_signature) // 2)}",
        "altered old-format payload": f"{flip(legacy_payload, len(legacy_payload) // 2)}.{legacy_signature}",
        "truncated": good[:-6],
        "signature only": signature,
        "wrong salt (a click-link token)": web.app.state.ctx.signer.link_token("https://example.com/"),
        "not a token": "hello",
        "empty": "",
    }


@pytest.mark.parametrize("method", ["get /u", "get /p", "post /u one-click", "post /p"])
def test_every_bad_token_gets_the_same_404(web, method):
    """Forged, altered, truncated, empty and wrong-salt tokens, and a deleted subscriber's, get one identical 404."""
    sid, = add_subscribers(engine_of(web), 1)
    deleted, = add_subscribers(engine_of(web), 1)
    deleted_token = token_for(web, deleted)
    with engine_of(web).begin() as connection:
        connection.exec_driver_sql(f"DELETE FROM subscriber WHERE id = {deleted}")
    verb, path, *one_click = method.split()

    def call(token: str):
        if verb == "get":
            return web.get(f"{path}/{token}")
        return web.post(f"{path}/{token}", data={"List-Unsubscribe": "One-Click"} if one_click else {})

    reference = call(deleted_token)
    assert reference.status_code == 404 and "This link does not work" in reference.text
    for name, token in bad_tokens(web, sid).items():
        response = call(token)
        assert response.status_code == 404, name
        assert response.text == reference.text, name
        assert response.headers["cache-control"] == "no-store", name
    assert subscriber(web, sid).status == SubscriberStatus.active


def test_a_token_reads_back_its_id_delivery_and_tag_and_only_those_shapes():
    "[id, delivery, tag] reads as itself, [id, delivery] as a link from before tags; every other shape is refused"
    signer, sign = Signer(SECRET), URLSafeSerializer(SECRET, salt=RECIPIENT_SALT).dumps
    ref = signer.read_recipient_token(signer.recipient_token(subscriber_id=3, delivery_id=9, tag=2**48 - 1))
    assert ref == RecipientRef(3, 9, 2**48 - 1)
    assert ref.fits(link_tag=2**48 - 1, accepts_untagged_links=False)
    assert not ref.fits(link_tag=2**48 - 2, accepts_untagged_links=True)  # a tag is never waved through
    untagged = signer.read_recipient_token(sign([3, None]))
    assert untagged == RecipientRef(3, None, None)
    assert untagged.fits(link_tag=5, accepts_untagged_links=True) and not untagged.fits(link_tag=5, accepts_untagged_links=False)
    for payload in ([3, None, None], [3, None, "5"], [3, None, True], [3, 9, 5, 1], [3], [True, None, 5], {"3": 5}):
        with pytest.raises(BadToken):
            signer.read_recipient_token(sign(payload))


def test_old_key_still_works_after_rotation_unknown_key_does_not(db_url):
    """After rotating DIGEST_SECRET_KEY (old one in old_secret_keys), last year's links work; others' do not."""
    engine = make_engine(db_url)
    sid, = add_subscribers(engine, 1)
    old_token = recipient_token(engine, Signer("the-old-secret-key-0123456789"), sid)
    unknown = recipient_token(engine, Signer("never-configured-key-012345678"), sid)
    settings = web_settings(db_url, secret_key="the-new-secret-key-0123456789",
                            old_secret_keys=["the-old-secret-key-0123456789"])
    app = create_app(settings, engine=engine, transport=RecordingTransport())
    try:
        with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
            assert client.get(f"/p/{old_token}").status_code == 200
            assert client.get(f"/u/{old_token}").status_code == 200
            assert client.get(f"/p/{unknown}").status_code == 404
            assert client.post(f"/u/{unknown}", data={"List-Unsubscribe": "One-Click"}).status_code == 404
            new_token = recipient_token(engine, app.state.ctx.signer, sid)
            # New links are signed with the new key alone: the old key cannot read them.
            Signer("the-new-secret-key-0123456789").read_recipient_token(new_token)
            assert new_token != old_token
            assert client.post(f"/u/{old_token}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    finally:
        engine.dispose()


def test_tokens_carry_no_time_and_work_a_year_later(web):
    """A token has no timestamp: made again later it is the same string, and a clock a year on still accepts it,
    as it accepts the tokens of the format every email carried before issue 20."""
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)
    tag = link_tags(engine_of(web), [sid])[sid]
    assert token.rsplit(".", 1)[0] == f"{sid}.-.{tag}"  # subscriber, no delivery, tag: no time anywhere
    assert Signer(SECRET).recipient_token(subscriber_id=sid, delivery_id=None, tag=tag) == token
    before = URLSafeSerializer(SECRET, salt=RECIPIENT_SALT).dumps([sid, None, tag])
    payload, signature = before.split(".")  # itsdangerous' timed tokens have a third, timestamp part
    assert json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))) == [sid, None, tag]

    ctx = web.app.state.ctx
    a_year_later = ctx.clock() + timedelta(days=366)
    ctx.clock = lambda: a_year_later
    assert web.get(f"/p/{token}").status_code == 200
    assert web.get(f"/p/{before}").status_code == 200
    assert web.post(f"/u/{before}", data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert subscriber(web, sid).unsubscribed_at == a_year_later


KEYS = ["the-old-secret-key-0123456789", "the-current-secret-key-0123"]
_payloads = st.one_of(
    st.tuples(st.integers(), st.one_of(st.none(), st.integers())).map(list),  # a token from before tags
    st.tuples(st.integers(), st.one_of(st.none(), st.integers()), st.integers(0, 2**48 - 1)).map(list),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                 max_leaves=6),
)
_token_chars = st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/é\x00 ")


@st.composite
def _tokens(draw) -> str:
    """Tokens of the current key, an old key, another key and another salt; then maybe altered, or not a token."""
    key = draw(st.sampled_from([*KEYS, "someone-elses-secret-key-000"]))
    salt = draw(st.sampled_from([RECIPIENT_SALT, "digest.link.v1"]))
    token = URLSafeSerializer(key, salt=salt).dumps(draw(_payloads))
    change = draw(st.sampled_from(["none", "replace", "insert", "truncate", "random"]))
    if change == "random":
        return draw(st.text(_token_chars, max_size=60))
    if change == "none" or not token:
        return token
    at = draw(st.integers(0, len(token) - 1))
    if change == "truncate":
        return token[:at]
    return token[:at] + draw(_token_chars) + token[at + (change == "replace"):]


def _outcome(loads, token: str):
    try:
        return ("value", loads(token))
    except BadData:
        return ("refused",)


@hypothesis_settings(max_examples=1500, deadline=None)
@given(token=_tokens())
def test_the_pixels_quick_token_check_accepts_exactly_what_itsdangerous_accepts(token):
    "for any token, made or altered or random, the quick check returns what itsdangerous returns, or refuses as it does"
    serializer = URLSafeSerializer(KEYS, salt=RECIPIENT_SALT)
    assert _outcome(_CurrentKey(serializer).loads, token) == _outcome(serializer.loads, token)
