"""The votes API (`GET /api/votes`, issue 17): the site pulls the readers' vote events."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()
