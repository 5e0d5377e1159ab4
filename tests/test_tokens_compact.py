"""The compact recipient token (issue 20): cheap to sign, as strict to read as the old one, and every link
already sent — the itsdangerous tokens of every email before it — keeps working, under every accepted key."""

from __future__ import annotations

import pytest
from itsdangerous import URLSafeSerializer

from digest.links import RECIPIENT_SALT, BadToken, RecipientRef, Signer

KEY, OLD = "current-key-" + "k" * 20, "previous-key-" + "o" * 20


def legacy_token(key: str, payload) -> str:
    """A recipient token as every email before issue 20 carried it."""
    return URLSafeSerializer([key], salt=RECIPIENT_SALT).dumps(payload)


@pytest.mark.parametrize("subscriber_id, delivery_id, tag", [(1, 1, 0), (42, None, 7), (10**9, 10**12, 2**48 - 1)])
def test_a_token_names_what_it_was_made_for(subscriber_id, delivery_id, tag):
    signer = Signer(KEY)
    token = signer.recipient_token(subscriber_id=subscriber_id, delivery_id=delivery_id, tag=tag)
    assert signer.read_recipient_token(token) == RecipientRef(subscriber_id, delivery_id, tag)
    assert signer.recipient_tokens([(subscriber_id, delivery_id, tag)]) == [token]
    assert all(c.isalnum() or c in "-_." for c in token) and len(token) < 70


@pytest.mark.parametrize("payload, expected", [([5, 9, 123], RecipientRef(5, 9, 123)),
                                                ([5, None, 123], RecipientRef(5, None, 123)),
                                                ([5, 9], RecipientRef(5, 9, None))])  # from before link tags
def test_tokens_sent_before_keep_working_with_the_current_and_an_old_key(payload, expected):
    signer = Signer(KEY, [OLD])
    assert signer.read_recipient_token(legacy_token(KEY, payload)) == expected
    assert signer.read_recipient_token(legacy_token(OLD, payload)) == expected
    with pytest.raises(BadToken):
        Signer(KEY).read_recipient_token(legacy_token(OLD, payload))  # a key no longer accepted


def test_a_compact_token_of_a_rotated_key_still_verifies_and_new_ones_use_the_current_key():
    before = Signer(OLD).recipient_token(subscriber_id=3, delivery_id=4, tag=5)
    rotated = Signer(KEY, [OLD])
    assert rotated.read_recipient_token(before) == RecipientRef(3, 4, 5)
    assert rotated.recipient_token(subscriber_id=3, delivery_id=4, tag=5) != before
    with pytest.raises(BadToken):
        Signer(KEY).read_recipient_token(before)


def test_anything_altered_is_refused():
    signer = Signer(KEY)
    token = signer.recipient_token(subscriber_id=12, delivery_id=34, tag=56)
    subscriber, delivery, tag, mac = token.split(".")
    flipped = mac[:-1] + ("A" if mac[-1] != "A" else "B")
    forged = [
        f"13.{delivery}.{tag}.{mac}", f"{subscriber}.35.{tag}.{mac}", f"{subscriber}.{delivery}.57.{mac}",
        f"{subscriber}.-.{tag}.{mac}", f"{subscriber}.{delivery}.{tag}.{flipped}", f"{subscriber}.{delivery}.{tag}.",
        f"{subscriber}.{delivery}.{tag}.{mac[:-1]}", f"{subscriber}.{delivery}.{tag}.{mac}A",
        f"012.{delivery}.{tag}.{mac}", f"+12.{delivery}.{tag}.{mac}", f"１２.{delivery}.{tag}.{mac}",
        f"{subscriber}.{delivery}.{tag}.{mac}.x", f"{subscriber}.{delivery}.{tag}", "", ".", "...", "a.b.c.d",
        Signer("another-key-" + "x" * 20).recipient_token(subscriber_id=12, delivery_id=34, tag=56),
    ]
    for bad in forged:
        with pytest.raises(BadToken):
            signer.read_recipient_token(bad)
