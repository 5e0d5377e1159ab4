"""The rule that keeps a real send's links safe: DIGEST_BASE_URL is an https:// address on the public internet.

Every link of an email — List-Unsubscribe and its one-click POST, the open pixel, clicks, votes, the signup
confirmation — is built from it. Gmail and Yahoo want `List-Unsubscribe: <https://…>` (2024 bulk-sender rules);
a link over http:// carries the reader's token in the clear; and a reader's mail client, elsewhere, cannot reach
this machine or a private network, so an unsubscribe that does not work becomes a spam report.

A SendGrid send outside sandbox mode is refused on such a URL (`refuse_unsafe_links` at every entry point that
sends; `SendGridTransport.send` as the last word). The outbox and sandbox mode deliver to nobody: no rule.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from digest.config import ConfigError

FIX = ("set DIGEST_BASE_URL to the https:// address readers reach `digest serve` at "
       "(DIGEST_SENDGRID_SANDBOX=true tries SendGrid without delivering anything)")
# Names that never resolve on the public internet: localhost (RFC 6761), mDNS's .local (RFC 6762), home
# networks' .home.arpa (RFC 8375), .internal (ICANN, kept for private use, 2024), the routers' and distributions'
# customary .lan and .localdomain, and the reserved .test, .invalid and .example (RFC 2606).
PRIVATE_SUFFIXES = (".localhost", ".local", ".home.arpa", ".internal", ".lan", ".localdomain", ".test", ".invalid",
                    ".example")


class UnsafeLinks(ConfigError):
    """A real send would carry links readers cannot safely follow; the message names the setting and the fix."""


def base_url_problem(url: str) -> str | None:
    """What makes ``url`` unsafe as the base of a real email's links ("is not https://; …"), or None."""
    parts = urlsplit(url.strip())
    problems = []
    if parts.scheme.lower() != "https":
        problems.append("is not https://")
    if parts.username is not None or parts.password is not None:
        problems.append("carries a user name or password")  # every reader would get it
    problems += [why for why in [host_problem(parts.hostname or "")] if why]
    return "; ".join(problems) or None


def host_problem(host: str) -> str | None:
    """Why readers cannot reach ``host`` (a name or an address, no brackets), or None."""
    host = host.lower().rstrip(".")
    if not host:
        return "names no host"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _name_problem(host)
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.0.0.1 is 10.0.0.1
    if not (mapped or address).is_global:
        # 127/8, ::1, 10/8, 172.16/12, 192.168/16, 169.254/16, fc00::/7, fe80::/10, 100.64/10, 0.0.0.0, …
        return f"names {host}, a loopback or private address readers cannot reach"
    return None


def _name_problem(host: str) -> str | None:
    if host == "localhost" or host.endswith(PRIVATE_SUFFIXES):
        return f"names {host}, a name that only this machine or network resolves"
    if "." not in host:
        # A single label (testserver, intranet) resolves only through this network's search domain or a
        # hosts file: a reader's mail client, elsewhere, finds nothing there — or someone else's host.
        return f"names {host}, a name with no dot that only this network resolves"
    return None


def unsafe_links_message(url: str) -> str | None:
    """The one line a refused send prints, or None when ``url`` is safe."""
    problem = base_url_problem(url)
    if problem is None:
        return None
    return (f"DIGEST_BASE_URL {url!r} {problem}, and every link of a real email (unsubscribe, opens, clicks) "
            f"starts with it: {FIX}")


def refuse_unsafe_links(settings) -> None:
    """Raise `UnsafeLinks` when ``settings`` send through SendGrid for real with an unsafe DIGEST_BASE_URL."""
    if settings.transport == "sendgrid" and not settings.sendgrid_sandbox:
        message = unsafe_links_message(settings.base_url)
        if message:
            raise UnsafeLinks(message)
