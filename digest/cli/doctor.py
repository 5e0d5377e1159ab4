"""`digest doctor`: the setup a bulk sender needs, checked before the first real send, each miss with its fix.

Every check reads the settings (and the database's schema revision); none goes over the network — no SendGrid,
no DNS. The headers are checked as the send builds them (digest.render.mail), the base URL by the rule a real
send enforces (digest.transports.safe_links).
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Annotated

import typer

from digest.cli.shared import settings_for_run

if TYPE_CHECKING:
    from digest.config import Settings

# RFC 2606 and RFC 6761: documentation and local names, never a sender's or a list's.
EXAMPLE_DOMAINS = ("example.com", "example.net", "example.org", "localhost")
NO_REPLY = ("noreply", "no-reply", "donotreply", "do-not-reply")
MIN_SECRET = 32  # characters; secrets.token_urlsafe(32) gives 43
NEW_SECRET = "DIGEST_SECRET_KEY=\"$(python -c 'import secrets; print(secrets.token_urlsafe(32))')\""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str  # what the setup has, in a few words
    fix: str = ""  # what to do, for a miss


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="print the checks as JSON, for scripts")] = False,
) -> None:
    """Check the setup a bulk sender needs: one line per check, and the fix for each miss.

    Checks the https base URL (the rule a real send enforces), the postal address, the from and reply-to
    addresses, List-Id, one-click unsubscribe (the headers as a send builds them), the Event Webhook's
    verification key, SendGrid's own tracking (off), the secret key, the alert address and the database's
    schema. Nothing goes over the network but the database connection. Run it before the first real send.
    Exit 0 when every check passes, 1 when any fails.

    \b
    Examples:
      digest doctor
      digest doctor --json
    """
    settings = settings_for_run(need_secrets=False, store=False)
    checks = run_checks(settings)
    if as_json:
        import json

        out = {"ok": all(c.ok for c in checks), "checks": [asdict(c) for c in checks]}
        sys.stdout.write(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(checklist(checks, encoding=sys.stdout.encoding or "ascii"))
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


def checklist(checks: list[Check], *, encoding: str) -> str:
    """The checks as lines, ✓/✗ where ``encoding`` has them (else PASS/FAIL), each miss followed by its fix."""
    marks = {True: "✓", False: "✗"}
    try:
        "".join(marks.values()).encode(encoding)
    except (UnicodeEncodeError, LookupError):  # LANG=C, PYTHONIOENCODING=ascii, an old console
        marks = {True: "PASS", False: "FAIL"}
    lines = []
    for check in checks:
        lines.append(f"{marks[check.ok]} {check.name}: {check.found}")
        if not check.ok:
            lines.append(f"    fix: {check.fix}")
    failed = sum(not c.ok for c in checks)
    lines.append(f"all {len(checks)} checks pass" if not failed else
                 f"{failed} of {len(checks)} checks fail: fix them before the first real send")
    return "\n".join(lines) + "\n"


def run_checks(settings: Settings) -> list[Check]:
    """Every check, in the order the checklist shows them."""
    return [check(settings) for check in (
        base_url, transport, postal_address, from_address, reply_to, list_id, one_click_unsubscribe,
        webhook_key, tracking, secret_key, alert_address, database)]


def base_url(settings: Settings) -> Check:
    from digest.transports.safe_links import FIX, base_url_problem

    problem = base_url_problem(settings.base_url)
    return Check("base URL", not problem, f"{settings.base_url} {problem}" if problem else settings.base_url, FIX)


def transport(settings: Settings) -> Check:
    from digest.config import PLACEHOLDER_SECRETS

    if settings.transport != "sendgrid":
        return Check("transport", False, "the outbox: every email is written to a file, none is sent",
                     "set SENDGRID_API_KEY to a key with Mail Send permission (DIGEST_TRANSPORT=sendgrid)")
    if settings.sendgrid_api_key.strip().lower() in PLACEHOLDER_SECRETS:
        return Check("transport", False, "SendGrid, with a missing or placeholder SENDGRID_API_KEY",
                     "set SENDGRID_API_KEY to a key with Mail Send permission")
    if settings.sendgrid_sandbox:
        return Check("transport", False, "SendGrid in sandbox mode: it validates every request and delivers none",
                     "unset DIGEST_SENDGRID_SANDBOX")
    return Check("transport", True, f"SendGrid at {settings.sendgrid_host}")


def postal_address(settings: Settings) -> Check:
    from digest.config import Settings

    address = settings.postal_address.strip()
    example = address == Settings.model_fields["postal_address"].default or "example" in address.lower()
    found = "the example default" if example else ("not set" if not address else address)
    return Check("postal address", bool(address) and not example, found,
                 "set DIGEST_POSTAL_ADDRESS to your real postal address: the law (CAN-SPAM) wants one in every issue")


def from_address(settings: Settings) -> Check:
    problem = _address_problem(settings.from_email)
    return Check("from address", not problem, problem or settings.from_email,
                 "set DIGEST_FROM_EMAIL to an address at your own domain, authenticated at SendGrid (SPF, DKIM)")


def reply_to(settings: Settings) -> Check:
    """Where readers' replies go: DIGEST_REPLY_TO, else the from address. It must be a mailbox someone reads."""
    address = settings.reply_to or settings.from_email
    problem = _address_problem(address)
    if not problem and address.partition("@")[0].lower() in NO_REPLY:
        problem = f"{address}: a no-reply address, and readers do reply"
    found = address if settings.reply_to else f"{address} (the from address)"
    return Check("reply-to", not problem, problem or found, "set DIGEST_REPLY_TO to a mailbox someone reads")


def list_id(settings: Settings) -> Check:
    """RFC 2919: a List-Id is "phrase <label.domain>"; checked in the headers a send builds."""
    import re

    from digest.render.environment import RenderedEmail
    from digest.render.mail import issue_batch

    email = RenderedEmail(subject="", html="", text="", mjml="")
    value = issue_batch(settings=settings, week="2026-W01", segment_id=None, email=email, recipients=[]).headers.get(
        "List-Id", "")
    match = re.fullmatch(r"[^<>]*<([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)>", value)
    bad = not match or _is_example(match.group(1))
    return Check("List-Id", not bad, f"{value!r}" + (", not at your own domain" if bad else ""),
                 'set DIGEST_LIST_ID to "Weekly AI Tool Verdicts <weekly.your-domain>", or DIGEST_FROM_EMAIL at your domain')


def one_click_unsubscribe(settings: Settings) -> Check:
    """RFC 8058: List-Unsubscribe with an https URL and List-Unsubscribe-Post, as `recipient` builds them."""
    from digest.render.mail import recipient
    from digest.services import links_for
    from digest.transports.safe_links import FIX, base_url_problem

    headers = recipient(None, "reader@example.org", "", "TOKEN", links_for(settings), settings).headers
    unsubscribe, post = headers.get("List-Unsubscribe", ""), headers.get("List-Unsubscribe-Post")
    url = unsubscribe.partition(">")[0].lstrip("<")
    ok = post == "List-Unsubscribe=One-Click" and not base_url_problem(url)
    found = f"List-Unsubscribe: {unsubscribe}" + ("" if ok else ", which readers' providers cannot POST to")
    return Check("one-click unsubscribe", ok, found, FIX)


def webhook_key(settings: Settings) -> Check:
    from digest.transports.sendgrid_events import key_usable

    key = settings.sendgrid_webhook_public_key.strip()
    fix = ("paste the Signed Event Webhook's verification key (SendGrid: Mail Settings, Event Webhook) into "
           "DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY: without it bounces and complaints are refused, never suppressed")
    if not key:
        return Check("webhook verification key", False, "not set", fix)
    if not key_usable(key):
        return Check("webhook verification key", False, "not a key SendGrid shows (base64 DER, no PEM lines)", fix)
    return Check("webhook verification key", True, "set, parses as an ECDSA public key")


def tracking(settings: Settings) -> Check:
    from digest.transports.sendgrid import TRACKING_OFF

    if settings.sendgrid_tracking == "off":
        return Check("SendGrid tracking", True, f"off in every request ({', '.join(TRACKING_OFF)})")
    return Check("SendGrid tracking", False, "the account's: its click tracking rewrites /u/ and /c/ links and "
                 "counts every click twice", "unset DIGEST_SENDGRID_TRACKING (default: off)")


def secret_key(settings: Settings) -> Check:
    from digest.config import DEMO_SECRET_KEY, PLACEHOLDER_SECRETS

    key = settings.secret_key
    if key.strip().lower() in PLACEHOLDER_SECRETS or key == DEMO_SECRET_KEY:
        return Check("secret key", False, "missing or a placeholder", f"set {NEW_SECRET}")
    if len(key) < MIN_SECRET:
        return Check("secret key", False, f"{len(key)} characters, fewer than {MIN_SECRET}", f"set {NEW_SECRET}")
    return Check("secret key", True, f"{len(key)} characters")


def alert_address(settings: Settings) -> Check:
    fix = "set DIGEST_ALERT_EMAIL to who should hear when the guardrail pauses a send"
    if not settings.alert_email:
        return Check("alert address", False, "not set: a guardrail pause is only a log line", fix)
    problem = _address_problem(settings.alert_email)
    return Check("alert address", not problem, problem or settings.alert_email, fix)


def database(settings: Settings) -> Check:
    """The schema revision against this code's, without creating a missing SQLite file."""
    from storage.faults import shown_url
    from storage.migrate import StoreUnusable, current, head

    shown, fix = shown_url(settings.database_url), "run `digest db upgrade`"
    name = _sqlite_file(settings.database_url)
    if name and not _file_exists(name):
        return Check("database", False, f"{shown} does not exist", fix)
    try:
        revision, needed = current(settings.database_url), head()
    except (StoreUnusable, ValueError) as exc:
        return Check("database", False, str(exc), "point DIGEST_DATABASE_URL at the digest database")
    if revision == needed:
        return Check("database", True, f"{shown} at the latest revision ({needed})")
    return Check("database", False, f"{shown} at revision {revision or 'none (empty)'}, this code needs {needed}", fix)


def _sqlite_file(url: str) -> str | None:
    """The file an SQLite URL names (sqlite:///relative, sqlite:////absolute), None for memory or another database:
    looking at it through a connection would create it."""
    scheme, slashes, rest = url.partition(":///")
    name = rest.partition("?")[0]
    return name if scheme.startswith("sqlite") and slashes and name and name != ":memory:" else None


def _file_exists(name: str) -> bool:
    from pathlib import Path

    return Path(name).exists()


def _address_problem(address: str | None) -> str | None:
    from digest.importing import InvalidAddress, normalize_address

    if not address:
        return "not set"
    try:
        normalize_address(address)
    except InvalidAddress as exc:
        return f"{address}: {exc}"
    return f"{address}: an example domain" if _is_example(address.rpartition("@")[2]) else None


def _is_example(domain: str) -> bool:
    domain = domain.lower().rstrip(".")
    return any(domain == d or domain.endswith("." + d) for d in EXAMPLE_DOMAINS) or domain.endswith(".example")
