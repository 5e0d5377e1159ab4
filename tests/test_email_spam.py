"""SpamAssassin (Debian's package, local tests only: no DNS, no network) scores the digest and the welcome as
the outbox writes them, headers and both parts included. The rules that fired are printed and put in every failure."""

from __future__ import annotations

import email
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from digest.transports.outbox import OutboxTransport
from tests.email_samples import sample_batch, typical_issue
from tests.welcome_samples import after_an_issue, before_any_issue, welcome_batch

# SpamAssassin's own threshold is 5.0; a newsletter that wants the inbox, not the spam folder, keeps far
# below it, since a receiving server adds its own points (DNS lists, reputation) to these.
MAX_SCORE = 2.0
SPAMASSASSIN = "spamassassin"
MISSING = "Debian's spamassassin is needed for this test (apt-get install spamassassin): run bash .ci/run"
_TOTAL = re.compile(r"Content analysis details:\s+\((-?\d+(?:\.\d+)?) points")
_RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z0-9_]+)\s+(.*)$")


@dataclass(frozen=True)
class Verdict:
    score: float
    rules: list[tuple[float, str, str]]  # (points, rule, description)
    debug: str

    def listing(self) -> str:
        lines = [f"{points:5.1f} {rule:<24} {description}" for points, rule, description in self.rules]
        return f"SpamAssassin score {self.score} (local tests); rules that fired:\n" + "\n".join(lines)


def spamassassin(eml: Path, home: Path) -> Verdict:
    """``spamassassin -L -t`` on one file: -L runs local tests only, so no DNS or network lookup is made."""
    if shutil.which(SPAMASSASSIN) is None:
        pytest.fail(MISSING, pytrace=False)
    with eml.open("rb") as message:
        result = subprocess.run([SPAMASSASSIN, "-L", "-t", "-D", "dns"], stdin=message, capture_output=True,
                                timeout=120, env={**os.environ, "HOME": str(home)})  # user prefs go to tmp
    return parse_report(result.stdout.decode("utf-8", "replace"), debug=result.stderr.decode("utf-8", "replace"))


def parse_report(report: str, *, debug: str = "") -> Verdict:
    """The total and the rules of the "Content analysis details" table that ``-t`` appends."""
    total = _TOTAL.search(report)
    assert total, f"no SpamAssassin report in its output:\n{report[-2000:]}\n{debug[-2000:]}"
    table = report[total.end():].split("----\n", 1)[-1].split("\n\n", 1)[0]
    rules: list[tuple[float, str, str]] = []
    for line in table.splitlines():
        if match := _RULE.match(line):
            rules.append((float(match[1]), match[2], match[3].strip()))
        elif rules and line.strip():  # a description wrapped onto the next line
            points, rule, description = rules[-1]
            rules[-1] = (points, rule, f"{description} {line.strip()}")
    return Verdict(score=float(total[1]), rules=rules, debug=debug)


# The emails a reader gets from the list, each as one recipient's batch: the typical issue, and the welcome
# (after an issue, and before any).
BATCHES = {"digest": lambda: sample_batch(typical_issue()),
           "welcome": lambda: welcome_batch(after_an_issue()),
           "welcome-before-any-issue": lambda: welcome_batch(before_any_issue())}


@pytest.fixture(params=list(BATCHES))
def list_eml(request, tmp_path) -> Path:
    """One of the list's emails for one subscriber, written by the outbox transport exactly as it sends it."""
    OutboxTransport(tmp_path / "outbox").send(BATCHES[request.param]())
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    return eml


def test_the_eml_is_a_complete_list_message(list_eml):
    """the scored file carries the headers a bulk sender needs and both parts, text before HTML"""
    message = email.message_from_bytes(list_eml.read_bytes())

    for header in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe",
                   "List-Unsubscribe-Post"):
        assert message[header], f"{list_eml.name}: no {header} header"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.get_payload()] == ["text/plain", "text/html"]


def test_spamassassin_scores_the_digest_and_the_welcome_below_two(list_eml, tmp_path):
    """the digest's and the welcome's .eml score under 2.0 with SpamAssassin's local rules; the rules that fired
    are listed"""
    verdict = spamassassin(list_eml, tmp_path)
    print("\n" + verdict.listing())

    score, listing = verdict.score, verdict.listing()

    assert "DNS not available" in verdict.debug, "SpamAssassin did not confirm it ran without DNS:\n" + verdict.debug
    assert score < MAX_SCORE, f"{list_eml.name} scores {score}, the limit is {MAX_SCORE}.\n{listing}"


def test_spamassassin_is_not_a_no_op(tmp_path):
    """a message built like spam (no Date, no Message-ID, shouting, money, drugs) scores far above the limit"""
    spam = tmp_path / "spam.eml"
    spam.write_bytes(b'From: "WINNER" <x@example.net>\r\nTo: you@example.org\r\nSubject: FREE MONEY!!! ACT NOW!!!\r\n'
                     b"MIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n<html><body><p>CLICK HERE to claim "
                     b"your $1,000,000 prize!!! 100% FREE, no risk, act now. Cheap viagra. Wire transfer.</p>"
                     b"</body></html>\r\n")

    verdict = spamassassin(spam, tmp_path)
    score, fired, listing = verdict.score, {rule for _, rule, _ in verdict.rules}, verdict.listing()

    assert score >= 5.0, listing
    assert {"MISSING_DATE", "MISSING_MID"} <= fired, listing
