"""A newcomer's typos get one line each: a bad --week, a broken template, a category nobody publishes."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from digest.cli.main import cli
from digest.claim.weeks import BadWeek, iso_week, parse_week
from tests.test_cli import REPO, run

CURRENT = iso_week(datetime.now(timezone.utc))


def _store(tmp_path: Path, *, cwd: Path | None = None, subscribers: bool = False) -> dict:
    env = {"DIGEST_DATABASE_URL": f"sqlite:///{tmp_path / 't.db'}", "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"),
           "DIGEST_SECRET_KEY": "typo-test-secret-0123456789"}
    assert run("db", "upgrade", cwd=cwd or tmp_path, env_extra=env).returncode == 0
    done = run("comparisons", "import", str(REPO / "digest" / "demo" / "data" / "comparisons.json"),
               cwd=cwd or tmp_path, env_extra=env)
    assert done.returncode == 0, done.stderr
    if subscribers:
        done = run("subscribers", "import", str(REPO / "digest" / "demo" / "data" / "subscribers.csv"),
                   cwd=cwd or tmp_path, env_extra=env)
        assert done.returncode == 0, done.stderr
    return env


# -- --week ------------------------------------------------------------------------------------------------

WEEK_COMMANDS = [("send",), ("send", "--dry-run"), ("send", "--test-to", "ed@example.com"), ("preview",), ("stats",)]
BAD_WEEKS = {
    "banana": "is not an ISO week: write it as {current}",
    "2026-W54": "does not exist: 2026 has weeks 2026-W01 to 2026-W53",
    "2021-W53": "does not exist: 2021 has weeks 2021-W01 to 2021-W52",
    "2026-W00": "does not exist: 2026 has weeks 2026-W01 to 2026-W53",
    "48": "is not an ISO week: write it as {current}",
}


@pytest.mark.parametrize("command", WEEK_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("week", sorted(BAD_WEEKS))
def test_a_bad_week_is_one_line_naming_the_form_and_exit_2(tmp_path, command, week):
    "--week banana (or a week its year lacks) on any command: one line saying what to write, exit 2, nothing run"
    done = CliRunner().invoke(cli, [*command, "--week", week], env={"DIGEST_OUTBOX_DIR": str(tmp_path / "outbox")})
    problem = BAD_WEEKS[week].format(current=CURRENT)
    assert done.exit_code == 2, done.output
    assert done.stderr.splitlines() == [f"error: --week {week!r} {problem}"], done.stderr
    assert done.stdout == "" and not (tmp_path / "outbox").exists()


def test_a_week_written_loosely_is_read_as_the_iso_week(tmp_path):
    "2026-w9 and 2026W09 name the week the store calls 2026-W09; stats looks that issue up by its label"
    assert parse_week("2026-w9", today=datetime(2026, 11, 30).date()) == "2026-W09"
    assert parse_week(" 2026W09 ", today=datetime(2026, 11, 30).date()) == "2026-W09"
    with pytest.raises(BadWeek):
        parse_week("2026-W9-1", today=datetime(2026, 11, 30).date())
    env = _store(tmp_path)
    done = run("stats", "--week", "2026-w9", cwd=tmp_path, env_extra=env)
    assert done.returncode == 1
    assert done.stderr.splitlines()[0] == "error: no issue for week 2026-W09; `digest stats` lists every issue"


def test_a_preview_of_a_week_with_no_issue_says_what_it_shows(tmp_path):
    "no issue yet for this week or a past one: stderr says the preview shows what an issue opened now would claim"
    env = _store(tmp_path)
    done = run("preview", "--format", "subject", cwd=tmp_path, env_extra=env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        f"no issue for {CURRENT} yet: showing what it would claim now (12 comparisons published and in no issue)"]
    past = run("preview", "--format", "subject", "--week", "2020-W10", cwd=tmp_path, env_extra=env)
    assert past.stderr.splitlines()[0] == ("no issue was opened for 2020-W10: showing what an issue opened now "
                                           "would claim (12 comparisons published and in no issue)")
    assert run("send", cwd=tmp_path, env_extra=env).returncode == 0  # opens this week's issue (nobody to send to)
    opened = run("preview", "--format", "subject", cwd=tmp_path, env_extra=env)
    assert opened.returncode == 0 and opened.stderr == "", "an opened issue is shown as it is: nothing to explain"


# -- templates -------------------------------------------------------------------------------------------

def _copy_with_broken_template(tmp_path: Path, line: str) -> tuple[Path, int]:
    """The package and its templates copied (the CLI run there uses them), one line added to the digest template."""
    copy = tmp_path / "copy"
    for part in ("digest", "storage", "templates"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__", "_templates"))
    template = copy / "templates" / "email" / "digest.mjml.j2"
    lines = template.read_text().splitlines()
    lines.append(line)
    template.write_text("\n".join(lines) + "\n")
    return copy, len(lines)


BROKEN = {
    "syntax": ("{{ week }", "unexpected '}'"),
    "undefined": ("{{ no_such_value.attribute }}", "'no_such_value' is undefined"),
}
TEMPLATE_COMMANDS = [("preview",), ("send", "--dry-run"), ("send", "--test-to", "ed@example.com"), ("send",)]


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_a_broken_template_is_one_line_with_file_line_and_message(tmp_path, kind):
    "a typo in the digest template: preview, dry run, test send and send print file:line: message, exit 2, no traceback"
    text, message = BROKEN[kind]
    copy, number = _copy_with_broken_template(tmp_path, text)
    env = _store(tmp_path, cwd=copy, subscribers=True)
    for command in TEMPLATE_COMMANDS:
        done = run(*command, cwd=copy, env_extra=env)
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.splitlines()[0] == f"error: templates/email/digest.mjml.j2:{number}: {message}", command
        assert "Traceback" not in done.stderr + done.stdout


def test_the_demo_with_a_broken_template_is_one_line(tmp_path):
    "`digest demo` over a template with a syntax error: file:line: message, exit 2, no traceback"
    copy, number = _copy_with_broken_template(tmp_path, "{% if %}")
    done = run("demo", "--dir", str(tmp_path / "demo"), cwd=copy)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"error: templates/email/digest.mjml.j2:{number}: ")
    assert "Traceback" not in done.stderr + done.stdout


def test_mjml_that_does_not_compile_names_the_template(tmp_path):
    "a bare < in mj-raw: mjml-python cannot parse the output; the line names the template and the parser's words"
    copy, _ = _copy_with_broken_template(tmp_path, "")
    template = copy / "templates" / "email" / "digest.mjml.j2"
    template.write_text(template.read_text().replace("</mj-body>", "<mj-raw>a < b</mj-raw></mj-body>", 1))
    env = _store(tmp_path, cwd=copy)
    done = run("preview", cwd=copy, env_extra=env)
    assert done.returncode == 2
    assert done.stderr.splitlines()[0].startswith(
        "error: templates/email/digest.mjml.j2: the rendered MJML did not compile: ")
    assert "Traceback" not in done.stderr


def test_every_command_with_a_week_option_checks_it():
    "a command added later with --week gets the same check: banana is one line and exit 2 on each of them"
    from typer.main import get_command

    from tests.test_cli import COMMANDS

    root = get_command(cli)
    checked = []
    for path in COMMANDS:
        command = root
        for name in path:
            command = command.commands[name]
        if any("--week" in getattr(param, "opts", ()) for param in command.params):
            done = CliRunner().invoke(cli, [*path, "--week", "banana"])
            assert (done.exit_code, done.stderr.splitlines()) == (
                2, [f"error: --week 'banana' is not an ISO week: write it as {CURRENT}"]), path
            checked.append(" ".join(path))
    assert {"preview", "send", "stats"} <= set(checked)


def test_the_preview_page_reads_the_week_as_the_cli_does(sqlite_url, tmp_path):
    "the editor types banana in the week box: the page says what to write; 2026-w9 style is this week's label"
    from fastapi.testclient import TestClient

    from tests.factories import build_sender
    from digest.config import Settings
    from digest.editor.desk import create_editor_app
    from tests.factories import add_comparison, add_subscribers

    sender = build_sender(Settings(database_url=sqlite_url, secret_key="k" * 32, outbox_dir=tmp_path / "outbox"))
    now = datetime.now(timezone.utc)
    add_comparison(sender.services.engine, published_at=now - timedelta(days=1), title="Quill vs Inkwell", category="Writing")
    add_subscribers(sender.services.engine, 1, categories=["Writing"])
    client = TestClient(create_editor_app(sender.services), base_url="http://127.0.0.1:8001")
    bad = client.get("/?week=banana")
    assert bad.status_code == 200
    assert f"week &#x27;banana&#x27; is not an ISO week: write it as {CURRENT}" in bad.text
    loose = client.get(f"/?week={CURRENT.lower()}")
    assert f"Issue {CURRENT}," in loose.text and "Quill vs Inkwell" in loose.text
    sender.services.engine.dispose()
