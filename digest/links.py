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

Recipient tokens are signed once per recipient per send, a million times for a million readers, so their
format is made for that (issue 20): ``{subscriber}.{delivery}.{tag}.{mac}``, the three numbers in decimal
("-" for no delivery) and the first 16 bytes of an HMAC-SHA256 over them, keyed per secret key for this use,
in URL-safe base64 — about 1.5 µs to sign. Tokens of the format before it (itsdangerous: a JSON list and an
HMAC-SHA1) were sent in every email until then: they keep verifying, with every accepted key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import quote

from itsdangerous import BadData, URLSafeSerializer
from itsdangerous.encoding import base64_decode

RECIPIENT_SALT = "digest.recipient.v1"  # the itsdangerous recipient tokens sent until issue 20: still read
RECIPIENT_V2 = b"digest.recipient.v2"  # derives each key's own HMAC key for the compact recipient tokens
LINK_SALT = "digest.link.v1"
MAC_BYTES = 16  # 128 bits of HMAC-SHA256: 22 characters of base64

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
        # The compact recipient tokens: the current key's keyed HMAC state, copied per token, then the older keys.
        self._macs = [hmac.new(hmac.new(key.encode(), RECIPIENT_V2, hashlib.sha256).digest(), digestmod=hashlib.sha256)
                      for key in reversed(keys)]
        self._mac = self._macs[0]

    def recipient_token(self, *, subscriber_id: int, delivery_id: int | None, tag: int) -> str:
        """The token of one subscriber row (``tag`` is its ``link_tag``) and, for a digest, one delivery."""
        value = f"{subscriber_id}.{'-' if delivery_id is None else delivery_id}.{tag}"
        mac = self._mac.copy()
        mac.update(value.encode())
        return f"{value}.{base64.urlsafe_b64encode(mac.digest()[:MAC_BYTES]).decode()[:-2]}"

    def recipient_tokens(self, rows) -> list[str]:
        """``recipient_token`` for many (subscriber id, delivery id, tag) at once: a send's batch of a thousand."""
        keyed, encode = self._mac, base64.urlsafe_b64encode
        tokens = []
        for subscriber_id, delivery_id, tag in rows:
            value = f"{subscriber_id}.{'-' if delivery_id is None else delivery_id}.{tag}"
            mac = keyed.copy()
            mac.update(value.encode())
            tokens.append(f"{value}.{encode(mac.digest()[:MAC_BYTES]).decode()[:-2]}")
        return tokens

    def read_recipient_token(self, token: str) -> RecipientRef:
        """What a token names; the caller checks it against the row (`RecipientRef.fits`)."""
        compact = self._read_compact(token)
        if compact is not None:
            return compact
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

    def _read_compact(self, token: str) -> RecipientRef | None:
        """A compact token's content when one of the keys signed it; BadToken when it has the compact form but no
        key's signature; None when it is not of the compact form (an older token: itsdangerous reads it)."""
        parts = token.split(".")
        if len(parts) != 4:
            return None
        subscriber, delivery, tag, signature = parts
        if not (_decimal(subscriber) and (delivery == "-" or _decimal(delivery)) and _decimal(tag)):
            return None  # an itsdangerous payload is base64 of JSON, never three decimal numbers
        value = f"{subscriber}.{delivery}.{tag}".encode()
        try:
            given = base64.urlsafe_b64decode(signature + "==") if len(signature) == 22 else b""
        except ValueError:
            given = b""
        for keyed in self._macs:
            mac = keyed.copy()
            mac.update(value)
            if len(given) == MAC_BYTES and hmac.compare_digest(mac.digest()[:MAC_BYTES], given):
                return RecipientRef(int(subscriber), None if delivery == "-" else int(delivery), int(tag))
        raise BadToken()

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


def _decimal(text: str) -> bool:
    """A non-negative number as ``str(int)`` writes it: no sign, no spaces, no leading zero, at most 19 digits."""
    return 0 < len(text) <= 19 and text.isascii() and text.isdigit() and (text == "0" or text[0] != "0")


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
