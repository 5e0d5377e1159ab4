"""`digest doctor` (issue 18, item 6): a checklist of the setup a bulk sender needs, each miss with its fix, exit 0
or 1, --json for scripts, and no network but the database (a SendGrid stand-in hears nothing)."""

from __future__ import annotations

import base64
import json

from alembic import command
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from digest.cli.doctor import database, reply_to
from digest.config import Settings
from storage.migrate import MIGRATIONS, alembic_config, current, head, upgrade
from tests.sendgrid_server import FakeSendGrid
from tests.test_send_sendgrid import digest, env_for

# What SendGrid shows under Mail Settings → Signed Event Webhook: base64 DER, no PEM lines.
PUBLIC_KEY = base64.b64encode(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
CHECKS = ["base URL", "transport", "postal address", "from address", "reply-to", "List-Id", "one-click unsubscribe",
          "webhook verification key", "SendGrid tracking", "secret key", "alert address", "database"]


def good_env(db_url: str, server: FakeSendGrid, **extra) -> dict[str, str]:
    """A deployment ready for its first real send."""
    env = env_for(db_url, server, DIGEST_SECRET_KEY="Zq3" * 15, DIGEST_BASE_URL="https://news.weekly-verdicts.io",
                  DIGEST_POSTAL_ADDRESS="Weekly AI Tool Verdicts, 12 rue des Lilas, 75011 Paris, France",
                  DIGEST_FROM_EMAIL="verdicts@weekly-verdicts.io", DIGEST_REPLY_TO="editor@weekly-verdicts.io",
                  DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY=PUBLIC_KEY, DIGEST_ALERT_EMAIL="ops@weekly-verdicts.io",
                  PYTHONIOENCODING="utf-8")
    env.update(extra)
    return env


def test_a_deployment_ready_to_send_passes_every_check_and_touches_no_network(db_url, tmp_path):
    """every setting right and the database at head: twelve ✓ lines, exit 0, and SendGrid hears nothing"""
    with FakeSendGrid() as server:
        done = digest("doctor", env=good_env(db_url, server), cwd=tmp_path)
        as_json = digest("doctor", "--json", env=good_env(db_url, server), cwd=tmp_path)
        assert server.requests == 0
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [f"✓ {name}" for name in CHECKS]
    assert lines[-1] == "all 12 checks pass"
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and report["ok"] is True and [c["name"] for c in report["checks"]] == CHECKS


def test_a_fresh_checkout_fails_every_check_with_its_fix_and_creates_nothing(tmp_path):
    """defaults, a short secret, SendGrid's tracking, a bad key, no database file: every check fails with a fix, exit 1"""
    missing = tmp_path / "nowhere.db"
    with FakeSendGrid() as server:
        env = good_env(f"sqlite:///{missing}", server, DIGEST_TRANSPORT="outbox", DIGEST_SECRET_KEY="short-but-not-empty",
                       DIGEST_SENDGRID_TRACKING="account", DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY="not-a-key")
        for name in ("DIGEST_BASE_URL", "DIGEST_POSTAL_ADDRESS", "DIGEST_FROM_EMAIL", "DIGEST_REPLY_TO",
                     "DIGEST_ALERT_EMAIL"):
            del env[name]
        done = digest("doctor", "--json", env=env, cwd=tmp_path)
        plain = digest("doctor", env={**env, "PYTHONIOENCODING": "ascii"}, cwd=tmp_path)
        assert server.requests == 0
    report = json.loads(done.stdout)
    assert done.returncode == 1 and report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == CHECKS
    assert all(c["fix"] for c in report["checks"])
    assert not missing.exists(), "the doctor does not create the database it checks"
    lines = plain.stdout.splitlines()
    assert plain.returncode == 1 and plain.stdout.isascii()
    assert [line.split(":")[0] for line in lines if not line.startswith("    ")][:-1] == [f"FAIL {n}" for n in CHECKS]
    assert sum(line.startswith("    fix: ") for line in lines) == 12
    assert "DIGEST_BASE_URL" in plain.stdout and "`digest db upgrade`" in plain.stdout


def test_a_database_behind_this_code_fails_with_the_upgrade_command(db_url):
    """a store one migration behind head: the database check fails and says to run `digest db upgrade`"""
    settings = Settings(database_url=db_url, secret_key="k" * 32)
    assert database(settings).ok
    previous = ScriptDirectory(str(MIGRATIONS)).get_revision(head()).down_revision
    command.downgrade(alembic_config(db_url), previous)
    assert current(db_url) == previous
    behind = database(settings)
    assert not behind.ok and "`digest db upgrade`" in behind.fix and previous in behind.found
    upgrade(db_url)


def test_replies_go_to_a_mailbox_someone_reads():
    """no DIGEST_REPLY_TO: replies go to the from address, fine unless it is a no-reply one"""
    assert reply_to(Settings(secret_key="k" * 32, from_email="verdicts@weekly-verdicts.io")).ok
    refused = reply_to(Settings(secret_key="k" * 32, from_email="no-reply@weekly-verdicts.io"))
    assert not refused.ok and "no-reply" in refused.found
    assert reply_to(Settings(secret_key="k" * 32, from_email="no-reply@weekly-verdicts.io",
                             reply_to="editor@weekly-verdicts.io")).ok
