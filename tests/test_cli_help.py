"""`digest --help` and every command's help: quick (nothing heavy imported) and readable at 80 columns."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from digest.cli.main import cli

REPO = Path(__file__).resolve().parents[1]

# What a command imports when it runs, never for its help: the store, the web stack, the renderer, the
# provider, the scheduler, the settings (pydantic-settings), and the domain modules that pull them in.
HEAVY = ("sqlalchemy", "sqlmodel", "alembic", "psycopg", "fastapi", "starlette", "uvicorn", "jinja2", "mjml",
         "sendgrid", "python_http_client", "apscheduler", "pydantic_settings", "email_validator", "jsonschema",
         "dotenv", "itsdangerous", "rich.progress", "rich.table", "rich.markdown", "storage")
LIGHT_DIGEST = {"digest", "digest.__main__", "digest.cli", "digest.cli.main", "digest.cli.help", "digest.cli.shared",
                "digest.cli.send", "digest.cli.preview", "digest.cli.stats", "digest.cli.serve", "digest.cli.store",
                "digest.cli.votes", "digest.cli.issue", "digest.cli.doctor"}


def help_paths():
    """Every group and command, as the words after `digest`: (), ("db",), ("db", "upgrade"), …"""
    stack = [((), get_command(cli))]
    while stack:
        path, command = stack.pop()
        yield path
        stack.extend(((*path, name), sub) for name, sub in getattr(command, "commands", {}).items())


PATHS = sorted(help_paths())


def help_text(path, *, width: int) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=width)
    assert result.exit_code == 0, result.output
    return result.output


def heavy(modules) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m.startswith(HEAVY)
                  or (m.startswith("digest.") and m not in LIGHT_DIGEST))


def test_help_imports_nothing_heavy():
    "`digest --help` and each `digest COMMAND --help`, in a fresh interpreter, import typer and rich only"
    script = f"""
import json, sys
from digest.cli.main import cli
loaded = {{}}
for path in {[list(p) for p in PATHS]!r}:
    try:
        cli(args=[*path, "--help"], prog_name="digest")
    except SystemExit:
        pass
    loaded[" ".join(path)] = sorted(sys.modules)
print(json.dumps(loaded), file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stderr.strip().splitlines()[-1])
    assert len(loaded) == len(PATHS)
    assert {f"digest {path}".strip(): heavy(modules) for path, modules in loaded.items() if heavy(modules)} == {}


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(("digest", *p)))
def test_help_fits_80_columns_with_no_type_labels(path):
    "at 80 columns every help line fits, values have names (FILE, WEEK) not types (<str>), nothing is cut"
    text = help_text(path, width=80)
    assert [line for line in text.splitlines() if len(line) > 80] == []
    assert re.findall(r"<[a-z][a-z_\[\] ]*>|\{[a-z_]+\}", text) == []  # <bool>, <str>, <path>, {file}
    assert not re.search(r"^ .*\.\.\.$", text, re.M), "a command's summary cut short"


@pytest.mark.parametrize("path", PATHS, ids=lambda p: " ".join(("digest", *p)))
def test_help_paragraphs_flow_to_the_terminal_width(path):
    "a paragraph of help breaks its lines only where the terminal ends, never where the docstring did"
    text = help_text(path, width=200)
    description = text.split("\n\n", 1)[1]
    description = re.split(r"^(?:Arguments|Options|Commands):$", description, flags=re.M)[0]
    for paragraph in description.strip("\n").split("\n\n"):
        lines = paragraph.splitlines()
        if lines[0].strip().startswith("Example"):
            continue
        assert all(len(line) > 150 for line in lines[:-1]), f"broken mid-sentence:\n{paragraph}"


def documented_commands():
    """Each `digest …` the README and docs/ show in backticks: (file, the text)."""
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for text in re.findall(r"`(digest [^`]+)`", doc.read_text(encoding="utf-8")):
            yield doc.name, text


def test_every_command_the_docs_show_exists_with_those_options():
    "a command or option the README or docs/ name is one the CLI has (renamed or dropped ones are listed)"
    wrong = []
    for doc, text in documented_commands():
        command, words = get_command(cli), text.split()[1:]
        while words and words[0] in getattr(command, "commands", {}):
            command = command.commands[words.pop(0)]
        if hasattr(command, "commands"):
            wrong.append(f"{doc}: `{text}`: no such command")
            continue
        known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)} | {"--help"}
        used = re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", " ".join(words))
        wrong += [f"{doc}: `{text}`: no option {opt}" for opt in used if opt not in known]
    assert wrong == []


def test_the_settings_the_readme_writes_to_env_are_settings():
    "every NAME= line in the README's .env example is a setting digest reads (a typo would be ignored)"
    from digest.config import Settings

    names = {f"DIGEST_{name.upper()}" for name in Settings.model_fields} | {"SENDGRID_API_KEY"}
    block = (REPO / "README.md").read_text(encoding="utf-8").split("cat > .env) <<EOF\n", 1)[1].split("EOF", 1)[0]
    written = re.findall(r"^\s*([A-Z_]+)=", block, re.M)
    assert written and [name for name in written if name not in names] == []
