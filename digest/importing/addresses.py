"""Email addresses: validated and normalized by email-validator, fast for the common shape.

``email_validator.validate_email`` costs ~20 µs per call on this machine, 20 s for a million-row
import. Almost every real address is plain ASCII before the @ and one of a few thousand domains after
it, so those take a shortcut that gives the same answer: the domain is validated once per distinct
domain (by email-validator itself, then cached), and a local part in RFC 5322 dot-atom form needs no
work at all — email-validator returns such a local part unchanged. Anything else (quoted, Unicode,
a display name, odd @-signs, over-long) goes through ``validate_email`` in full.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES, EMAIL_MAX_LENGTH

# Never ask DNS: imports run offline, and the operator vouches for the list.
_OPTIONS = {"check_deliverability": False}

# RFC 5322 atext separated by single dots (no leading, trailing or double dot), at most 64 characters
# (RFC 5321 4.5.3.1.1); the same character class as email_validator.rfc_constants.DOT_ATOM_TEXT.
_ATEXT = r"[a-zA-Z0-9_!#$%&'*+\-/=?^`{|}~]"
_PLAIN_LOCAL = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_LOCAL_MAX = 64
_CASE_INSENSITIVE = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)  # postmaster@, abuse@ …: RFC 2142


class InvalidAddress(ValueError):
    """An address email-validator rejects; ``reason`` says why, in its words."""

    def __init__(self, address: str, reason: str):
        super().__init__(f"{address!r} is not a valid email address: {reason}")
        self.address = address
        self.reason = reason


@dataclass(frozen=True)
class Address:
    email: str  # the normalized address (email-validator's ``normalized``)
    key: str  # ``email`` lower-cased: what makes a subscriber unique


def normalize_address(text: str) -> Address:
    """Validate an address and return its normalized form; raises InvalidAddress.

    Same accept/reject and normalization as ``validate_email(text, check_deliverability=False)``.
    """
    email = _fast(text)
    if email is None:
        email = _full(text)
    return Address(email=email, key=email.lower())


def _fast(text: str) -> str | None:
    """The normalized address for the common shape, or None when the full validation must decide."""
    local, at, domain = text.partition("@")
    if not at or len(local) > _LOCAL_MAX or not _PLAIN_LOCAL.fullmatch(local):
        return None
    forms = _domain_forms(domain)
    # email-validator checks the length of the address as typed, normalized and in IDNA ASCII, in UTF-8
    # bytes; the local part is ASCII here, so only the longest form of the domain matters.
    if forms is None or len(local) + 1 + forms[2] > EMAIL_MAX_LENGTH:
        return None
    if local.lower() in _CASE_INSENSITIVE:
        local = local.lower()
    return f"{local}@{forms[0]}"


@lru_cache(maxsize=200_000)  # distinct domains of a big list; ~100 bytes each
def _domain_forms(domain: str) -> tuple[str, str, int] | None:
    """The normalized form of a domain email-validator accepts, its IDNA ASCII form, and the UTF-8
    length of the longest of these and the domain as typed; None when it is refused."""
    try:
        checked = validate_email(f"a@{domain}", **_OPTIONS)
    except EmailNotValidError:
        return None
    longest = max(len(form.encode("utf-8")) for form in (domain, checked.domain, checked.ascii_domain))
    return checked.domain, checked.ascii_domain, longest


def _full(text: str) -> str:
    try:
        return validate_email(text, **_OPTIONS).normalized
    except EmailNotValidError as exc:
        raise InvalidAddress(text, str(exc)) from None
