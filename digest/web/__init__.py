"""The subscriber-facing web app: tracking, unsubscribe, preferences, signup, Event Webhook, archive."""

__all__ = ["create_app"]


def __getattr__(name: str):
    # Lazy: importing a light module of this package (digest.web.pages) must not import FastAPI.
    if name == "create_app":
        from digest.web.factory import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
