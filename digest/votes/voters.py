"""Who voted, as the site may know it: a stable pseudonym, never the reader."""

from __future__ import annotations

import hashlib
import hmac

CHOICES = ("ship", "skip")


def voter_pseudonym(secret_key: str, subscriber_id: int) -> str:
    """A keyed hash of the reader's id (HMAC-SHA256 with DIGEST_SECRET_KEY, 32 hex characters): the same
    reader is always the same voter, so the site can de-duplicate, and without the key nobody can tell
    which reader it is or link the pseudonym to their other activity. Rotating the secret key gives every
    reader a new pseudonym (their next votes count as a new voter's)."""
    digest = hmac.new(secret_key.encode(), f"voter:{subscriber_id}".encode(), hashlib.sha256).hexdigest()
    return digest[:32]
