"""The ASGI app for uvicorn (`digest serve`, or `uvicorn digest.web.main:app`), settings from the environment."""

from digest.config import Settings
from digest.web.factory import create_app

_settings = Settings()
_settings.check_secrets()
app = create_app(_settings)
