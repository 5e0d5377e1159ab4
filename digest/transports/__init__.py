"""Ways to hand a batch of emails to the world. `digest.send.loop` knows only the `Transport` protocol."""

from digest.transports.base import (
    Batch,
    PermanentError,
    RateLimited,
    Recipient,
    SendResult,
    Transport,
    TransientError,
)

__all__ = ["Batch", "PermanentError", "RateLimited", "Recipient", "SendResult", "Transport", "TransientError"]


def make_transport(settings) -> Transport:
    """The transport the settings name: SendGrid, or the local outbox of .eml files."""
    if settings.transport == "sendgrid":
        from digest.transports.sendgrid import SendGridTransport

        return SendGridTransport(
            api_key=settings.sendgrid_api_key,
            host=settings.sendgrid_host,
            timeout=settings.sendgrid_timeout,
            sandbox=settings.sendgrid_sandbox,
            tracking=settings.sendgrid_tracking,
            base_url=settings.base_url,  # a real send refuses unsafe links (digest.transports.safe_links)
        )
    from digest.transports.outbox import OutboxTransport

    return OutboxTransport(settings.outbox_dir)
