"""The MJML we render passes the reference validator (npm mjml 5.x, strict): mjml-python validates nothing."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import pytest

from digest.config import Settings
from digest.links import Links, Signer
from digest.render.email import Renderer
from tests.email_samples import with_tools
from tests.test_render import long_comparison, make_comparison
from tests.welcome_samples import WELCOMES, render_welcome

pytestmark = pytest.mark.mjml_validator

VALIDATOR = Path(__file__).resolve().parent.parent / "tools" / "node" / "node_modules" / ".bin" / "mjml"
MISSING = "reference MJML validator missing: run `npm install --prefix tools/node --no-package-lock` (bash .ci/run does)"


def minimal():
    comparison = with_tools(make_comparison(), tagline="", summary="", entry_price="", panel_ship_pct=None, reviews=())
    return [comparison], 0


def typical():
    return [make_comparison(0), make_comparison(1, tools=3), make_comparison(2)], 4


def maximal():
    return [long_comparison(i, tools=4) for i in range(10)], 25


def validate(path: Path) -> subprocess.CompletedProcess:
    if not VALIDATOR.exists():
        pytest.fail(MISSING, pytrace=False)
    return subprocess.run([str(VALIDATOR), "--validate", str(path), "--config.validationLevel", "strict"],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("issue", [minimal, typical, maximal], ids=lambda f: f.__name__)
def test_rendered_mjml_passes_strict_validation(issue, tmp_path):
    """the minimal, typical and maximal digests are valid MJML for the reference implementation"""
    settings = Settings(secret_key="x" * 32, base_url="https://news.example.com")
    renderer = Renderer(settings=settings, links=Links(base_url=settings.base_url, signer=Signer("x" * 32)))
    comparisons, more = issue()
    email = renderer.render_segment(week="2026-W48", issue_date=date(2026, 11, 26), comparisons=comparisons,
                                    more_count=more, audience="all categories")
    path = tmp_path / f"{issue.__name__}.mjml"
    path.write_text(email.mjml, encoding="utf-8")

    result = validate(path)

    assert result.returncode == 0, f"mjml --validate failed on {path}:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize("sample", WELCOMES, ids=lambda f: f.__name__)
def test_the_welcome_passes_strict_validation(sample, tmp_path):
    """the welcome (after an issue, before any, with the longest titles) is valid MJML for the reference
    implementation"""
    path = tmp_path / f"welcome-{sample.__name__}.mjml"
    path.write_text(render_welcome(sample()).mjml, encoding="utf-8")

    result = validate(path)

    assert result.returncode == 0, f"mjml --validate failed on {path}:\n{result.stdout}\n{result.stderr}"


def test_the_validator_rejects_invalid_mjml(tmp_path):
    """the validator is not a no-op: an unknown attribute fails strict validation"""
    path = tmp_path / "invalid.mjml"
    path.write_text('<mjml><mj-body><mj-section><mj-column><mj-text bogus="1">x</mj-text>'
                    "</mj-column></mj-section></mj-body></mjml>", encoding="utf-8")

    result = validate(path)

    assert result.returncode != 0
    assert "bogus" in result.stdout + result.stderr
