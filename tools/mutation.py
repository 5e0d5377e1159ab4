"""Mutation testing on demand (issue 22): mutmut 3 over one area of the code at a time, with that area's tests.

    .venv/bin/python -m pip install -e '.[mutation]'          # once: mutmut is not in the test extra, CI skips it
    .venv/bin/python tools/mutation.py --list                  # the areas, their modules and their tests
    .venv/bin/python tools/mutation.py links                   # run; earlier results stand, new tests are picked up
    .venv/bin/python tools/mutation.py links --survivors       # run the survivors again (after a new test)
    .venv/bin/python tools/mutation.py links --rerun           # run every mutant of the area again
    .venv/bin/python tools/mutation.py links --survivors --fresh-stats  # after a new function: trace all tests again
    .venv/bin/python tools/mutation.py links results           # the survivors
    .venv/bin/python tools/mutation.py links show NAME         # one mutant's diff
    .venv/bin/python tools/mutation.py links score             # killed/total per module, as docs/testing.md gives it
    .venv/bin/python tools/mutation.py links save              # the results into tools/mutation-results/links/

Each area works in its own copy of the checkout, mutants/<area>/ (git-ignored): mutmut always works in ./mutants
under the current directory and keeps one table of which test calls which function, which a second area's test
selection would throw away. The copy is refreshed from the working tree on every run (files whose content
changed only, so mutmut's cache of results for unchanged modules holds). The shared settings (source paths,
PostgreSQL deselected, files to copy) are pyproject.toml's [tool.mutmut]; this tool adds only the area's modules
(only_mutate) and its tests (the test selection). Not part of .ci/run: an area takes minutes to an hour.

The results outlive the copy: every run ends by saving them into tools/mutation-results/AREA/ (committed, so
docs/testing.md's scores can be checked), and a fresh copy starts from there (`save` does it by hand after a
run that was killed). mutmut throws away the result of any mutant whose function has changed since.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "tools" / "mutation-results"


@dataclass(frozen=True)
class Area:
    modules: tuple[str, ...]
    tests: tuple[str, ...]
    deselect: tuple[str, ...] = ()  # tests of the listed files that this area leaves out, each saying why
    env: tuple[tuple[str, str], ...] = ()  # set for the area's test runs
    # Also the tests marked postgres (the server DIGEST_TEST_POSTGRES_URL names, as tests/conftest.py reads it):
    # for modules whose statements or locks differ per dialect, which the SQLite tests cannot tell apart.
    postgres: bool = False


# In the order users feel a mistake most. Tests: the files that exercise the modules through their callers,
# without the slow browser and load tests (mutmut runs, for each mutant, only the selected tests that call it).
AREAS: dict[str, Area] = {
    "links": Area(
        modules=("digest/links.py",),
        tests=(
            "tests/test_web_tokens.py",
            "tests/test_tokens_compact.py",
            "tests/test_link_identity.py",
            "tests/test_email_links.py",
        ),
    ),
    "subscriber": Area(
        modules=("digest/web/subscriber.py", "digest/web/subscriber_common.py", "digest/web/subscriber_preferences.py"),
        tests=(
            "tests/test_web_subscriber.py",
            "tests/test_web_tokens.py",
            "tests/test_link_identity.py",
            "tests/test_reader_zones.py",
            "tests/test_subscriber_pages.py",
        ),
    ),
    "selection": Area(
        modules=("digest/claim/selection.py",),
        tests=("tests/test_selection.py", "tests/test_ranking_rules.py"),
    ),
    "signup": Area(
        modules=("digest/web/signup.py", "digest/web/signup_confirm.py", "digest/web/signup_limits.py"),
        tests=("tests/test_web_signup.py", "tests/test_signup_abuse.py", "tests/test_reader_zones.py",
               "tests/test_signup_answers.py"),
        # The signup mailer as a thread of the test process (tests/fixtures_signup.py): a process per test made
        # the area take hours, and its calls are not seen there. Left out, the tests of that process itself
        # (that it is one, that it is replaced when it dies, that shutdown sends what waits), none of which calls
        # the pages mutated here in a way the others do not.
        deselect=(
            "tests/test_signup_abuse.py::test_every_signup_hands_one_letter_to_another_process_which_does_the_rest_later",
            "tests/test_signup_abuse.py::test_a_mailer_that_died_is_replaced_at_the_next_signup",
            "tests/test_signup_abuse.py::test_shutdown_sends_the_waiting_letters_at_once",
        ),
        env=(("DIGEST_TEST_SIGNUP_MAILER", "thread"),),
    ),
    "fanout": Area(
        modules=("digest/claim/fanout.py", "storage/deliveries.py", "storage/issues.py"),
        # test_workers.py is left out: it starts worker processes (10-15 s a test), whose calls mutmut does not see;
        # the claim's leases and releases are held in-process by test_send_faults.py and test_local_time.py. The
        # verdict changes and readers' results carried in the fan-out, and the archive's reading of storage/issues.py,
        # are held by their own tests; a warm-up's engaged-first order by test_warmup.py.
        tests=("tests/test_weekly.py", "tests/test_store.py", "tests/test_send_faults.py",
               "tests/test_issue_controls.py", "tests/test_local_time.py", "tests/test_verdict_changes.py",
               "tests/test_reader_results.py", "tests/test_web_archive.py", "tests/test_fan_out_rules.py",
               "tests/test_warmup.py", "tests/test_send_ahead.py"),
    ),
    "ahead": Area(
        modules=("digest/send/ahead.py",),
        # Its own tests: every send goes through ahead.py, so the send area's tests would each run for every one of
        # its mutants; these hold what it promises (the lease ahead left pending by a crash or a pause, the read
        # ahead left to another sender, a transaction the server ended), on both databases.
        tests=("tests/test_send_ahead.py",),
        postgres=True,
    ),
    "send": Area(
        modules=("digest/send/loop.py",),
        # Not test_workers.py nor test_reliability_crash.py: their senders are `digest worker`/`digest send`
        # processes (6-15 s a test), whose calls mutmut does not see. These call Sender in this process; of
        # test_progress.py, not the three that start a `digest` process (it fails in mutmut's copy: mutmut's
        # import hook there).
        tests=("tests/test_send_faults.py", "tests/test_weekly.py", "tests/test_issue_controls.py",
               "tests/test_local_time.py", "tests/test_warmup.py", "tests/test_pause_promise.py",
               "tests/test_progress.py", "tests/test_send_ahead.py"),
        deselect=(
            "tests/test_progress.py::test_digest_send_off_a_terminal_logs_its_progress_on_stderr_and_the_final_figures",
            "tests/test_progress.py::test_digest_worker_off_a_terminal_logs_its_progress_with_the_worker_log",
            "tests/test_progress.py::test_digest_subscribers_import_off_a_terminal_ends_with_its_figures_on_stderr",
            # a `digest send` process too (the code it runs is the checkout's, not the mutant), and 10 of the
            # 14 s that every mutant of the send loop's core cost
            "tests/test_warmup.py::test_digest_send_says_the_days_allowance_is_used_and_exits_0",
        ),
    ),
    "votes": Area(
        modules=("digest/web/votes.py", "storage/votes.py"),
        tests=("tests/test_web_votes.py", "tests/test_votes_store.py", "tests/test_link_identity.py"),
        postgres=True,  # the cast's lock and FOR UPDATE are PostgreSQL's only
    ),
    "api": Area(
        modules=("digest/web/api.py", "digest/web/api_votes.py"),
        tests=("tests/test_api_comparisons.py", "tests/test_votes_site.py"),
        postgres=True,  # the votes cursor's bound is an INTEGER's there
    ),
    "guardrail": Area(
        modules=("digest/track/guardrail.py", "storage/guardrail.py"),
        tests=("tests/test_guardrail.py", "tests/test_guardrail_lag.py"),
    ),
    "local-time": Area(
        modules=("digest/claim/local_time.py",),
        tests=("tests/test_local_time.py",),
    ),
    # The Event Webhook (issue 21): its route, its store's bounds and its SQL. Not test_webhook_load.py (a server
    # under load) nor test_reliability_provider.py (the sending side's faults).
    "webhook": Area(
        modules=("storage/provider_events.py", "digest/web/webhook.py", "digest/web/webhook_store.py"),
        tests=("tests/test_webhook.py", "tests/test_stats_webhook.py", "tests/test_webhook_rules.py"),
        postgres=True,  # the events' INSERT and the standings' row lock are written per dialect
    ),
}


def _tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.splitlines()
    return [name for name in listed if not name.startswith("mutants/") and (ROOT / name).is_file()]


def refresh_copy(workdir: Path) -> None:
    """The working tree's files in workdir; a file whose content is unchanged keeps its time (mutmut's cache)."""
    for name in _tracked_files():
        source, target = ROOT / name, workdir / name
        if target.is_file() and filecmp.cmp(source, target, shallow=False):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def _result_files(area: Area) -> list[str]:
    """mutmut's results, relative to its mutants/ directory: per module, each mutant's exit code and the hash of
    the function it mutates (a changed function's mutants are tried again); the table of which test calls which
    function, and how long each test takes."""
    return [f"{module}.meta" for module in area.modules] + ["mutmut-stats.json"]


def save_results(name: str, workdir: Path) -> None:
    """The area's results into tools/mutation-results/AREA/ (committed): a fresh checkout's run starts from them."""
    for file in _result_files(AREAS[name]):
        source = workdir / "mutants" / file
        if source.is_file():
            target = RESULTS / name / file
            target.parent.mkdir(parents=True, exist_ok=True)
            data = json.loads(source.read_text())
            target.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")) + "\n")


def restore_results(name: str, workdir: Path) -> None:
    """A fresh copy (no results of its own yet) starts from the committed ones; mutmut itself then throws away
    the result of every mutant whose function changed since, and runs the tests that are new."""
    if (workdir / "mutants" / "mutmut-stats.json").exists():
        return
    for file in _result_files(AREAS[name]):
        source = RESULTS / name / file
        if source.is_file():
            target = workdir / "mutants" / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)


def _mutant_glob(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".") + ".*"


def _statuses(module: str) -> dict[str, str]:
    from mutmut.__main__ import SourceFileMutationData, status_by_exit_code

    data = SourceFileMutationData(path=Path(module))
    data.load()
    return {name: status_by_exit_code[code] for name, code in data.exit_code_by_key.items()}


def score(area: Area) -> None:
    for module in area.modules:
        statuses = list(_statuses(module).values())
        killed = sum(status in ("killed", "timeout", "caught by type check") for status in statuses)
        total = len(statuses)
        left = {status: statuses.count(status) for status in sorted(set(statuses)) if status != "killed"}
        percent = f"{100 * killed / total:.1f} %" if total else "-"
        print(f"{module}: {killed}/{total} killed ({percent}) {left or ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("area", nargs="?", choices=sorted(AREAS), help="the area to work on")
    parser.add_argument("command", nargs="*", default=["run"],
                        help="run (default), results, show NAME, score, save (into tools/mutation-results/)")
    parser.add_argument("--list", action="store_true", help="print the areas, their modules and tests")
    parser.add_argument("--rerun", action="store_true", help="run every mutant of the area again")
    parser.add_argument("--survivors", action="store_true", help="run the area's surviving mutants again")
    parser.add_argument("--fresh-stats", action="store_true",
                        help="trace every test again for which functions it calls (after adding a function that "
                             "older tests call: mutmut traces only new tests)")
    parser.add_argument("--max-children", type=int, default=2, help="parallel mutants (default 2: a shared box)")
    args = parser.parse_args(argv)
    if args.list or not args.area:
        for name, area in AREAS.items():
            print(f"{name}: {' '.join(area.modules)}\n    tests: {' '.join(area.tests)}")
        return 0

    area = AREAS[args.area]
    workdir = ROOT / "mutants" / args.area
    workdir.mkdir(parents=True, exist_ok=True)
    if args.fresh_stats:  # the table of which test calls what; the mutants' results stay
        for stats in (workdir / "mutants" / "mutmut-stats.json", RESULTS / args.area / "mutmut-stats.json"):
            stats.unlink(missing_ok=True)
    restore_results(args.area, workdir)
    if args.command[0] == "save":
        save_results(args.area, workdir)
        return 0
    if args.command[0] == "run" or not (workdir / "pyproject.toml").exists():  # a fresh checkout: score, results
        refresh_copy(workdir)
    os.chdir(workdir)
    sys.path.insert(0, str(workdir))

    from mutmut.configuration import config

    settings = config()  # pyproject.toml's [tool.mutmut], as copied
    settings.only_mutate = list(area.modules)
    settings.pytest_add_cli_args_test_selection = [test for test in area.tests if Path(test).is_file()]
    settings.pytest_add_cli_args_test_selection += [f"--deselect={test}" for test in area.deselect]
    os.environ.update(area.env)
    if area.postgres:
        marks = settings.pytest_add_cli_args.index("-m") + 1
        settings.pytest_add_cli_args[marks] = settings.pytest_add_cli_args[marks].replace("not postgres and ", "")
    # mutmut resets every result when the test selection changes; a declared test file that comes into being
    # only adds tests (mutmut runs them for stats as new tests), so the declared list is what counts.
    fingerprint = settings.config_fingerprint()
    selection = repr(area.tests) + (repr((area.deselect, area.env)) if area.deselect or area.env else "")
    fingerprint["test_selection"] = hashlib.sha256(selection.encode()).hexdigest()[:12]
    settings.config_fingerprint = lambda: fingerprint

    if args.command[0] == "score":
        score(area)
        return 0
    from mutmut.__main__ import cli

    mutmut_args = list(args.command)
    if mutmut_args[0] == "run":
        mutmut_args += ["--max-children", str(args.max_children)]
        if args.rerun:
            mutmut_args += [_mutant_glob(module) for module in area.modules]
        elif args.survivors:
            mutmut_args += [name for module in area.modules for name, status in _statuses(module).items()
                            if status == "survived"]
    try:
        return cli.main(mutmut_args, prog_name="mutmut", standalone_mode=False) or 0
    finally:
        if mutmut_args[0] == "run":
            save_results(args.area, workdir)


if __name__ == "__main__":
    sys.exit(main())
