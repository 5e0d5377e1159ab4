"""The ASGI app for uvicorn (`digest serve`, or `uvicorn digest.web.main:app`), settings from the environment."""

from digest.config import Settings
from digest.transports.safe_links import refuse_unsafe_links
from digest.web.factory import create_app

_settings = Settings()
_settings.check_secrets()
refuse_unsafe_links(_settings)  # as `digest serve` does: its signup mail would carry those links
app = create_app(_settings)
