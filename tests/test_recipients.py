"""An issue's recipients as the send loop builds them (digest.render.mail.recipients): what each one's
substitutions and headers carry, one rule for a batch of a thousand and for a single letter."""

from __future__ import annotations

from digest.config import Settings
from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, TOKEN_TAG, Links, Signer
from digest.render import mail


def links_and_settings(**overrides) -> tuple[Links, Settings]:
    settings = Settings(secret_key="k" * 32, base_url="https://news.example.com", **overrides)
    return Links(base_url=settings.base_url, signer=Signer(settings.secret_key)), settings


def test_each_recipient_gets_their_token_greeting_and_one_click_unsubscribe():
    links, settings = links_and_settings()
    rows = [(11, 1, "ann@example.com", "Ann & Bo <3", 7), (12, 2, "cy@example.com", "", 7),
            (13, 3, "di@example.com", "Di\r\nBcc: x@example.com", 7)]
    tokens = links.signer.recipient_tokens([(row[1], row[0], row[4]) for row in rows])

    people = list(mail.recipients(rows, tokens, links, settings))

    assert [p.delivery_id for p in people] == [11, 12, 13] and people[0].email == "ann@example.com"
    assert [p.substitutions[TOKEN_TAG] for p in people] == tokens
    assert [(p.substitutions[NAME_HTML_TAG], p.substitutions[NAME_TEXT_TAG]) for p in people] == [
        ("Ann &amp; Bo &lt;3", "Ann & Bo <3"), ("there", "there"), ("Di Bcc: x@example.com", "Di Bcc: x@example.com")]
    assert people[2].name == "Di Bcc: x@example.com"  # a name is one line before it reaches a header
    assert people[0].headers == {"List-Unsubscribe": f"<https://news.example.com/u/{tokens[0]}>",
                                 "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert links.signer.read_recipient_token(tokens[1]).delivery_id == 12


def test_an_unsubscribe_mailbox_joins_the_link_in_the_header():
    "DIGEST_UNSUBSCRIBE_MAILTO: the header offers the mailbox too, the token in its subject"
    links, settings = links_and_settings(unsubscribe_mailto="leave@news.example.com")

    person = mail.recipient(5, "ann@example.com", "Ann", "TOKEN", links, settings)

    assert person.headers["List-Unsubscribe"] == (
        "<https://news.example.com/u/TOKEN>, <mailto:leave@news.example.com?subject=unsubscribe%20TOKEN>")
    assert person == mail.recipients([(5, 1, "ann@example.com", "Ann", 0)], ["TOKEN"], links, settings)[0]
