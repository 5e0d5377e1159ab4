"""Signed tokens and the URLs every email carries.

Two kinds of token, both signed with DIGEST_SECRET_KEY (older keys in DIGEST_OLD_SECRET_KEYS still
verify, so rotating the key keeps last year's unsubscribe links working):

- the *recipient* token names the subscriber, the delivery and the subscriber row's random ``link_tag``;
  it is the same for the open pixel, the unsubscribe and the preference links of one email, and reaches
  each recipient as a substitution tag. The tag is what makes a link die with its subscriber: ids are
  never reused, but a restored backup can hand one out again, and the next row under that id has a tag
  of its own (`RecipientRef.fits`). Tokens made before the tag (two values, not three) still work for
  the subscribers stored when the tag came in (migration 0007), and for nobody else;
- the *link* token signs a click target; it is the same for every recipient of a segment, so the target
  cannot be altered (no open redirect) and a click costs no per-recipient substitution.

Tokens carry no expiry: an unsubscribe link must keep working for as long as the email exists.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import quote

from itsdangerous import BadData, URLSafeSerializer
from itsdangerous.encoding import base64_decode

RECIPIENT_SALT = "digest.recipient.v1"
LINK_SALT = "digest.link.v1"

# Per-recipient substitution tags. SendGrid replaces them in the subject, text and HTML; the outbox does
# the same. Text from the store can never produce "[%" (see render.neutralize), so it cannot forge one.
TOKEN_TAG = "[%t%]"
NAME_HTML_TAG = "[%name_html%]"
NAME_TEXT_TAG = "[%name_text%]"


@dataclass(frozen=True)
class RecipientRef:
    subscriber_id: int
    delivery_id: int | None
    tag: int | None = None  # None: a token from before tags, honoured only by rows that accept untagged links

    def fits(self, *, link_tag: int, accepts_untagged_links: bool) -> bool:
        """True when this token was made for the subscriber row with this tag (the id alone is not enough)."""
        return tag_fits(self.tag, link_tag=link_tag, accepts_untagged_links=accepts_untagged_links)


def tag_fits(tag: int | None, *, link_tag: int, accepts_untagged_links: bool) -> bool:
    """A token's tag against a subscriber row's: equal, or no tag (a link from before tags) and a row that
    was stored before them (storage.models.Subscriber.accepts_untagged_links)."""
    return tag == link_tag if tag is not None else bool(accepts_untagged_links)


class BadToken(Exception):
    """Forged, altered, truncated or from a key no longer accepted. Deliberately says nothing more."""


class Signer:
    def __init__(self, secret_key: str, old_keys: list[str] | tuple[str, ...] = ()):
        # itsdangerous signs with the last key and accepts all of them.
        keys = [*old_keys, secret_key]
        self._recipient = URLSafeSerializer(keys, salt=RECIPIENT_SALT)
        self._link = URLSafeSerializer(keys, salt=LINK_SALT)
        self._recipient_current = _CurrentKey(self._recipient)

    def recipient_token(self, *, subscriber_id: int, delivery_id: int | None, tag: int) -> str:
        """The token of one subscriber row (``tag`` is its ``link_tag``) and, for a digest, one delivery."""
        return self._recipient.dumps([subscriber_id, delivery_id, tag])

    def read_recipient_token(self, token: str) -> RecipientRef:
        """What a token names; the caller checks it against the row (`RecipientRef.fits`)."""
        try:
            payload = self._recipient_current.loads(token)
        except (BadData, ValueError, TypeError) as exc:
            raise BadToken() from exc
        # [subscriber, delivery, tag], or [subscriber, delivery] from before tags (no tag: None).
        if type(payload) is not list or len(payload) not in (2, 3):
            raise BadToken()
        subscriber_id, delivery_id, *tagged = payload
        tag = tagged[0] if tagged else None
        if type(subscriber_id) is not int or (delivery_id is not None and type(delivery_id) is not int) \
                or (tagged and type(tag) is not int):
            raise BadToken()
        return RecipientRef(subscriber_id, delivery_id, tag)

    def link_token(self, url: str) -> str:
        return self._link.dumps(url)

    def read_link_token(self, token: str) -> str:
        try:
            url = self._link.loads(token)
        except (BadData, ValueError, TypeError) as exc:
            raise BadToken() from exc
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise BadToken()
        return url


class _CurrentKey:
    """``serializer.loads``, with the check of a token signed by the current key done in a third of the time.

    Every pixel fetch checks a recipient token, and itsdangerous builds a signer, derives its key (a
    SHA-1) and an HMAC from scratch for each: 24% of the pixel's time under load (py-spy). Here the key
    is derived once, by itsdangerous, and the HMAC's keyed state is copied per token. Anything that is not
    a well-formed token with the current key's signature goes to ``serializer.loads`` itself, which
    decides (older keys, errors): this path can only accept what that would accept.
    """

    def __init__(self, serializer: URLSafeSerializer):
        signer = serializer.make_signer()
        self._serializer = serializer
        self._sep = signer.sep
        self._keyed = hmac.new(signer.derive_key(), digestmod=signer.digest_method)

    def loads(self, token: str):
        try:
            value, signature = token.encode("ascii").rsplit(self._sep, 1)
            mac = self._keyed.copy()
            mac.update(value)
            if hmac.compare_digest(mac.digest(), base64_decode(signature)):
                return self._serializer.load_payload(value)
        except (BadData, ValueError):
            pass
        return self._serializer.loads(token)


class Links:
    """The URLs of one email, pointing at the web app under DIGEST_BASE_URL.

    Per-recipient URLs contain the TOKEN_TAG, filled per recipient by the transport.
    """

    def __init__(self, *, base_url: str, signer: Signer):
        self.base_url = base_url.rstrip("/")
        self.signer = signer

    def open_pixel(self, token: str = TOKEN_TAG) -> str:
        return f"{self.base_url}/o/{token}.gif"

    def unsubscribe(self, token: str = TOKEN_TAG) -> str:
        return f"{self.base_url}/u/{token}"

    def preferences(self, token: str = TOKEN_TAG) -> str:
        return f"{self.base_url}/p/{token}"

    def click(self, url: str, token: str = TOKEN_TAG) -> str:
        return f"{self.base_url}/c/{self.signer.link_token(url)}?r={token}"

    def vote(self, slug: str, tool: int, choice: str, token: str = TOKEN_TAG) -> str:
        """A reader's ship/skip link for tool ``tool`` (1-based) of comparison ``slug`` (issue 17): the token is
        the recipient token the email already carries, so the link costs no substitution of its own."""
        return f"{self.base_url}/v/{token}/{quote(slug, safe='')}/{tool}/{choice}"

    def archive(self, week: str) -> str:
        return f"{self.base_url}/archive/{quote(week)}"

    def archive_index(self) -> str:
        return f"{self.base_url}/archive"
