"""The house plan holds: SQL lives in storage/, the provider's vocabulary in its adapter, storage below the domain.

These are read from the code's own imports and text (ast), so a shortcut taken in a hurry — a `select` in a
web route, an `sg_event_id` in the tracking code — fails here by name, before it spreads.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATABASE_LIBRARIES = {"sqlalchemy", "sqlmodel"}
# SendGrid's own field names: the webhook's event fields and the mail-send payload's.
SENDGRID_WORDS = ("sg_event_id", "sg_message_id", "sg_machine_open", "sg_content_type", "asm_group_id")
# What storage may not know: the stages above it.
ABOVE_STORAGE = ("digest.web", "digest.cli", "digest.send", "digest.render", "digest.editor", "digest.track",
                 "digest.subscribers", "digest.importing", "digest.services", "digest.transports")


def modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def runtime_imports(path: Path) -> set[str]:
    """Modules ``path`` imports when it runs: imports under `if TYPE_CHECKING:` are type names only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(inner) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for inner in ast.walk(node)}
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def relative(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_no_module_of_the_domain_or_the_web_talks_to_the_database_library():
    "every SQL statement lives under storage/: nothing under digest/ imports SQLAlchemy or SQLModel to run"
    found = {relative(path): sorted(name for name in runtime_imports(path) if name.split(".")[0] in DATABASE_LIBRARIES)
             for path in modules("digest")}
    assert {path: names for path, names in found.items() if names} == {}


def test_storage_knows_nothing_of_the_stages_above_it():
    "storage/ is below the domain: it imports no web, CLI, send, render, editor, track or provider module"
    found = {relative(path): sorted(name for name in runtime_imports(path) if name.startswith(ABOVE_STORAGE))
             for path in modules("storage")}
    assert {path: names for path, names in found.items() if names} == {}


def test_sendgrids_vocabulary_stays_in_its_adapter():
    "SendGrid's field names appear only under digest/transports/: the domain speaks of deliveries and events"
    transports = REPO / "digest" / "transports"
    found = {relative(path): [word for word in SENDGRID_WORDS if word in path.read_text(encoding="utf-8")]
             for path in modules("digest") if transports not in path.parents}
    assert {path: words for path, words in found.items() if words} == {}


def test_one_wiring_builds_the_services_for_every_way_in():
    "the CLI, the scheduler, the worker's command and the web app all build their services with build_services"
    users = {relative(path) for path in [*modules("digest"), REPO / "scheduler.py"]
             if "build_services(" in path.read_text(encoding="utf-8")}
    assert {"scheduler.py", "digest/web/factory.py"} <= users
    assert any(path.startswith("digest/cli/") for path in users)
