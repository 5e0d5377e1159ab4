"""The readers' vote pages (`/v/{token}/{slug}/{tool}/{choice}`, issue 17)."""

from __future__ import annotations

from fastapi import APIRouter

from digest.web.subscriber_common import LinkRoute

router = APIRouter(route_class=LinkRoute)
