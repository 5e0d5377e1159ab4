"""Verdicts that changed (issue 16, item 3), as the email shows them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from digest.render.text import Tagged
from storage.records import VerdictChangeRecord


def change_views(changes: Sequence[VerdictChangeRecord], *, link: Callable[[str], Tagged]) -> tuple:
    return tuple(changes)
