"""The `digest` command as people use it: help texts, the demo, previews, imports."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from digest.cli.main import cli

REPO = Path(__file__).resolve().parents[1]


def all_commands():
    root = get_command(cli)
    stack = [((), root)]
    while stack:
        path, command = stack.pop()
        if hasattr(command, "commands"):  # a group (Typer vendors its own click)
            stack.extend(((*path, name), sub) for name, sub in command.commands.items())
        else:
            yield path


COMMANDS = sorted(all_commands())


def run(*args, cwd: Path, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "digest", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_every_way_in_runs_the_one_typer_object():
    "the console script, `python -m digest` and `python -m digest.cli` all run digest.cli.main.cli"
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert scripts == {"digest": "digest.cli.main:cli"}
    for module in ("digest", "digest.cli"):
        done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Weekly AI Tool Verdicts" in done.stdout and "subscribers" in done.stdout


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(path):
    "each command answers --help with what it does and examples on lines of their own, and the README names it"
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    examples = result.output.split("Example", 1)[1].split("\n\n")[0].splitlines()
    assert examples[0] in (":", "s:") and examples[1:], result.output
    assert all(line.strip().startswith(("digest ", "DIGEST_")) for line in examples[1:]), examples
    assert f"digest {' '.join(path)}" in (REPO / "README.md").read_text()


def test_demo_runs_from_any_directory_and_says_where_to_look(tmp_path):
    "a fresh directory: `digest demo` sends two issues to the outbox and writes HTML previews it names"
    done = run("demo", "--dir", "here", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    outbox = sorted((tmp_path / "here" / "outbox").glob("*.eml"))
    previews = sorted((tmp_path / "here" / "preview").glob("*.html"))
    assert len(outbox) > 20 and previews
    assert str(tmp_path / "here" / "outbox") in done.stdout
    assert (tmp_path / "here" / "preview" / "index.html").as_uri() in done.stdout
    named = [p for p in previews if p.as_uri() in done.stdout]
    assert named and "<html" in named[0].read_text()
    message = email.message_from_bytes(outbox[0].read_bytes(), policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert message["List-Unsubscribe"].startswith("<http") and message["List-Unsubscribe-Post"]
    assert "[%" not in message.get_body(("plain",)).get_content(), "every substitution filled"
    again = run("demo", "--dir", "here", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert len(sorted((tmp_path / "here" / "outbox").glob("*.eml"))) == len(outbox), "a rerun starts afresh"


def test_preview_writes_mjml_text_and_html_of_the_coming_issue(tmp_path):
    "after the demo's data is in, preview renders the coming issue in each format without sending"
    db = f"sqlite:///{tmp_path / 'p.db'}"
    env = {"DIGEST_DATABASE_URL": db}
    assert run("db", "upgrade", cwd=tmp_path, env_extra=env).returncode == 0
    example = REPO / "tests" / "data" / "import" / "example.json"  # the contract's example (.ci/run checks the copy)
    imported = run("comparisons", "import", str(example), cwd=tmp_path, env_extra=env)
    assert imported.returncode == 0, imported.stderr
    for fmt in ("mjml", "html", "text"):
        done = run("preview", "--format", fmt, "--out", f"issue.{fmt}", cwd=tmp_path, env_extra=env)
        assert done.returncode == 0, done.stderr
    assert (tmp_path / "issue.mjml").read_text().lstrip().startswith(("<mjml", "{#"))
    assert "<html" in (tmp_path / "issue.html").read_text()
    text = (tmp_path / "issue.text").read_text()
    assert "/u/" in text and "[%" not in text
    assert not (tmp_path / "outbox").exists()


def test_a_bad_import_file_is_a_clear_error_and_changes_nothing(tmp_path):
    "a score of 130 is named with file, item and field; exit 1; the store keeps no part of the file"
    db = f"sqlite:///{tmp_path / 'p.db'}"
    env = {"DIGEST_DATABASE_URL": db}
    run("db", "upgrade", cwd=tmp_path, env_extra=env)
    bad = tmp_path / "bad.json"
    good = (REPO / "digest" / "demo" / "data" / "comparisons.json").read_text()
    bad.write_text(good.replace('"score": 85', '"score": 130', 1))
    done = run("comparisons", "import", str(bad), cwd=tmp_path, env_extra=env)
    assert done.returncode == 1
    assert "bad.json" in done.stderr and "score" in done.stderr and "130" in done.stderr
    assert "nothing was imported" in done.stderr
    preview = run("preview", "--format", "subject", cwd=tmp_path, env_extra=env)
    assert preview.returncode == 1 and "no comparison" in preview.stderr


def test_send_dry_run_shows_who_gets_what_and_sends_nothing(tmp_path):
    "--dry-run lists the claim, the segments with audience sizes and subjects, and who gets nothing"
    db = f"sqlite:///{tmp_path / 'p.db'}"
    env = {"DIGEST_DATABASE_URL": db}
    run("db", "upgrade", cwd=tmp_path, env_extra=env)
    run("comparisons", "import", str(REPO / "digest" / "demo" / "data" / "comparisons.json"), cwd=tmp_path, env_extra=env)
    run("subscribers", "import", str(REPO / "digest" / "demo" / "data" / "subscribers.csv"), cwd=tmp_path, env_extra=env)
    done = run("send", "--dry-run", cwd=tmp_path, env_extra=env)
    assert done.returncode == 0, done.stderr
    assert "segments" in done.stdout and "recipients" in done.stdout and "KB" in done.stdout
    assert not (tmp_path / "outbox").exists()


def _demo_store(tmp_path) -> dict:
    env = {"DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}", "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
           "DIGEST_SECRET_KEY": "cli-test-secret-0123456789"}
    run("db", "upgrade", cwd=tmp_path, env_extra=env)
    run("comparisons", "import", str(REPO / "digest" / "demo" / "data" / "comparisons.json"), cwd=tmp_path, env_extra=env)
    run("subscribers", "import", str(REPO / "digest" / "demo" / "data" / "subscribers.csv"), cwd=tmp_path, env_extra=env)
    return env


def test_preview_eml_is_the_whole_message_with_its_headers(tmp_path):
    "--format eml writes a multipart/alternative message with List-Unsubscribe, as the subscriber would get it"
    env = _demo_store(tmp_path)
    done = run("preview", "--format", "eml", "--as", "ada.quinn@example.com", "--out", "issue.eml",
               cwd=tmp_path, env_extra=env)
    assert done.returncode == 0, done.stderr
    message = email.message_from_bytes((tmp_path / "issue.eml").read_bytes(), policy=email.policy.default)
    assert message.get_content_type() == "multipart/alternative"
    assert message["To"].addresses[0].addr_spec == "ada.quinn@example.com"
    assert message["List-Unsubscribe"] and message["List-Id"]
    assert "[%" not in message.get_body(("html",)).get_content()


def test_a_test_send_reaches_only_the_named_addresses_and_touches_no_issue(tmp_path):
    "--test-to sends the real issue to two editors, subject marked [TEST], and opens no issue"
    env = _demo_store(tmp_path)
    done = run("send", "--test-to", "ed@example.com, chief@example.org", cwd=tmp_path, env_extra=env)
    assert done.returncode == 0, done.stderr
    files = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(files) == 2
    messages = [email.message_from_bytes(f.read_bytes(), policy=email.policy.default) for f in files]
    assert {m["To"].addresses[0].addr_spec for m in messages} == {"ed@example.com", "chief@example.org"}
    assert all(m["Subject"].startswith("[TEST] ") for m in messages)
    plan = run("send", "--dry-run", cwd=tmp_path, env_extra=env)
    assert "not opened yet" in plan.stdout, "the test send opened no issue"


def test_stats_html_writes_a_page_with_the_chart(tmp_path):
    "after the demo, `digest stats --html` writes a chart of both issues"
    run("demo", "--dir", "d", cwd=tmp_path)
    env = {"DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 'd' / 'demo.db'}"}
    done = run("stats", "--html", "stats.html", cwd=tmp_path, env_extra=env)
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "stats.html").read_text()
    assert "<svg" in page and page.count("<polyline") == 4 and "2026-W" in page


def test_digest_serve_boots_the_web_app_and_refuses_placeholder_secrets(tmp_path):
    "`digest serve` answers on its port with security headers; with DIGEST_SECRET_KEY=change-me it will not start"
    import socket
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env.update(DIGEST_DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}", DIGEST_SECRET_KEY="serve-test-secret-0123456789")
    assert run("db", "upgrade", cwd=tmp_path, env_extra=env).returncode == 0
    server = subprocess.Popen([sys.executable, "-m", "digest", "serve", "--port", str(port)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/archive", timeout=2) as answer:
                    assert answer.status == 200
                    assert "frame-ancestors 'none'" in answer.headers["Content-Security-Policy"]
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=10)
    refused = run("serve", "--port", str(port), cwd=tmp_path,
                  env_extra={**env, "DIGEST_SECRET_KEY": "change-me"})
    assert refused.returncode == 2 and "DIGEST_SECRET_KEY" in refused.stderr
