"""The subscriber-facing web app: tracking, unsubscribe, preferences, signup, Event Webhook, archive."""

from digest.web.app import create_app

__all__ = ["create_app"]
