"""Settings, read once at an entry point from the environment (prefix ``DIGEST_``) and an optional ``.env``.

The SendGrid API key is the one exception to the prefix: it is read from ``SENDGRID_API_KEY``, the name
SendGrid's own tools use.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values people paste from examples; refused outside the demo so a real send never runs on them.
PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev", "development", "xxx", "your-secret-key"})
DEMO_SECRET_KEY = "demo-only-secret-key-never-use-in-production"
MIN_API_TOKEN = 32  # characters; secrets.token_urlsafe(32) gives 43


class ConfigError(Exception):
    """A setting is missing or unusable; the message says which and what to do."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DIGEST_", env_file=".env", extra="ignore")

    database_url: str = Field(default="sqlite:///digest.db", description="SQLAlchemy URL of the store")
    base_url: str = Field(default="http://127.0.0.1:8000", description="public URL of the web app, for links")
    site_url: str = Field(default="https://verdicts.example.com", description="the comparison site")
    secret_key: str = Field(default="", description="signs every link in an email")
    # Older keys still accepted when verifying links, so a rotation keeps old emails working.
    old_secret_keys: list[str] = Field(default_factory=list)
    from_email: str = "verdicts@example.com"
    from_name: str = "Weekly AI Tool Verdicts"
    reply_to: str | None = None
    postal_address: str = "Weekly AI Tool Verdicts, 1 Example Street, Springfield"
    list_id: str = Field(default="", description="List-Id header value; derived from the from-address when empty")
    unsubscribe_mailto: str | None = Field(default=None, description="optional mailto: address for List-Unsubscribe")
    transport: Literal["sendgrid", "outbox"] | None = Field(
        default=None, description="sendgrid or outbox; outbox when no SENDGRID_API_KEY is set"
    )
    outbox_dir: Path = Path("outbox")
    sendgrid_api_key: str = Field(
        default="", validation_alias=AliasChoices("SENDGRID_API_KEY", "DIGEST_SENDGRID_API_KEY")
    )
    sendgrid_host: str = "https://api.sendgrid.com"
    sendgrid_timeout: float = Field(default=30.0, gt=0, description="seconds per HTTP request to SendGrid")
    sendgrid_sandbox: bool = False
    send_schedule: str = Field(default="0 9 * * thu", description="crontab line; use day names (APScheduler 3)")
    timezone: str = "UTC"
    # When a reader gets the issue (issue 19): "global", every reader at the schedule's time in DIGEST_TIMEZONE;
    # "local", each at the schedule's weekday and hour in their own time zone (subscriber.timezone, else
    # DIGEST_TIMEZONE). The issue then opens early enough for the first zone, and SendGrid holds each batch
    # until its due time (send_at, at most 72 hours ahead).
    delivery: Literal["global", "local"] = "global"
    # With local delivery, how long before a reader's hour their email is handed to SendGrid, which holds it until
    # then (send_at). Longer rides out a longer outage of the scheduler and the workers; shorter keeps more of the
    # send within reach of a pause, the guardrail and a cancel (SendGrid can call back what it holds, but only until
    # 10 minutes before its time). At most 71: SendGrid holds a send 72 hours at most.
    hold_hours: float = Field(default=3.0, gt=0, le=71)
    batch_size: int = Field(default=1000, ge=1, le=1000)  # SendGrid: at most 1000 recipients per request
    max_shown: int = Field(default=8, ge=1, le=50)
    max_attempts: int = Field(default=6, ge=1, le=50)
    # How long a sender owns the batch it leased: longer than one batch can take (timeout × attempts plus
    # the backoff). A worker that dies or hangs loses its rows to another one when this runs out.
    lease_seconds: float = Field(default=600.0, gt=0)
    # `digest worker` with nothing to send looks again after this long.
    worker_idle_seconds: float = Field(default=2.0, gt=0)
    # Off a terminal, `digest send`, `digest worker` and the imports log their progress this often.
    progress_seconds: float = Field(default=5.0, gt=0)
    # How long a send waits out an unavailable database (locked SQLite, restarting PostgreSQL) before failing.
    db_retry_seconds: float = Field(default=120.0, ge=0)
    demo: bool = False
    # Signup (double opt-in). The limits stop anyone using our form to mail-bomb an address or to flood the
    # list from one machine; a person who mistypes twice still gets through.
    signup_per_address_per_hour: int = Field(default=3, ge=1, description="signups of one address per hour")
    signup_per_client_per_hour: int = Field(default=20, ge=1, description="signups from one client IP per hour")
    confirm_max_age_days: int = Field(default=7, ge=1, le=90, description="how long a confirmation link works")
    # The Event Webhook's verification key, as SendGrid shows it (base64 DER, no PEM lines). Empty: the
    # webhook refuses every post (503) rather than trust unsigned events.
    sendgrid_webhook_public_key: str = ""
    # An open this soon after the send is a machine (image proxy, Apple Mail Privacy Protection prefetch):
    # nobody reads a weekly digest within seconds of it leaving.
    machine_open_seconds: float = Field(default=10.0, ge=0)
    # A signed webhook post older than this (or this far in the future) is refused as a possible replay.
    webhook_max_age_seconds: int = Field(default=600, ge=60)
    # How long a webhook post may wait for the store (its turn, its locks, its commit) before the answer is
    # 503 with Retry-After: SendGrid retries for 24 hours, and an answer within seconds beats its timeout.
    webhook_busy_seconds: float = Field(default=5.0, gt=0)
    # The push API's bearer token (PUT and DELETE /api/comparisons/{slug}, digest.web.api), which the
    # comparison site sends as "Authorization: Bearer …". Empty: the API refuses every request (503).
    # A SecretStr, so that no repr or log line of the settings shows it.
    api_token: SecretStr = Field(default=SecretStr(""), description="bearer token of the push API")
    # The comparison site's feed (digest.importing.feed), pulled before every scheduler tick and every
    # `digest send`; None: nothing is pulled. Only http:// and https://.
    comparisons_feed_url: str | None = Field(default=None, description="URL of the comparisons feed (JSON array)")
    # 20 s: the feed is one static JSON file; a site that takes longer is down, and the send goes on without it.
    comparisons_feed_timeout: float = Field(default=20.0, gt=0, description="seconds a feed pull may take")
    # The site's webhook for readers' votes (digest.votes.push): every vote event is POSTed there, signed with
    # the secret, from the scheduler's minute job and `digest votes push`. None: nothing is pushed (the site
    # may still pull GET /api/votes). Only http:// and https://; the secret is required with it.
    site_webhook_url: str | None = Field(default=None, description="URL the vote events are POSTed to")
    # validate_default: checked against the URL even when unset. Checked here, on the field, so that the error
    # quotes only this value (empty), never the other settings a model-wide error would print.
    site_webhook_secret: SecretStr = Field(default=SecretStr(""), validate_default=True,
                                           description="HMAC key of X-Digest-Signature")
    # 10 s: a webhook answers a small JSON body at once; a site that takes longer is down, and the push retries.
    site_webhook_timeout: float = Field(default=10.0, gt=0, description="seconds one push POST may take")
    # Reputation (issue 18). SendGrid's own click, open and subscription tracking: "off" (default) turns them
    # off in every payload — we track opens and clicks ourselves, and SendGrid's click tracking would rewrite
    # our /u/ and /c/ links and count each click twice; "account" leaves them as the SendGrid account sets them.
    sendgrid_tracking: Literal["off", "account"] = "off"
    # The guardrail (digest.track.guardrail): once this many of an issue's deliveries are known from the Event
    # Webhook, a bounce rate ((bounces + drops) / processed) or a complaint rate (spam reports / delivered) past
    # its maximum pauses the issue on every sender. Gmail: keep complaints under 0.1 %, never reach 0.3 %.
    guardrail_min_events: int = Field(default=500, ge=1)
    max_bounce_rate: float = Field(default=0.05, gt=0, le=1, description="e.g. 0.05 or 5%")
    max_complaint_rate: float = Field(default=0.001, gt=0, le=1, description="e.g. 0.001 or 0.1%")
    # Who hears of a guardrail pause (one email per issue); None: the log line only.
    alert_email: str | None = None
    # Sunset (digest.subscribers.sunset): a reader with no human open, click or vote in this many weeks, who
    # got at least 8 issues in them, is asked once whether they still want the verdicts.
    sunset_weeks: int = Field(default=26, ge=1)
    # Warm-up of a new sending domain (digest.send.warmup): from this day, sends per day follow the ramp, most
    # engaged readers first; None: no limit.
    warmup_start: date | None = Field(default=None, description="first day of the warm-up, YYYY-MM-DD")

    @field_validator("max_bounce_rate", "max_complaint_rate", mode="before")
    @classmethod
    def _rate(cls, value):
        """A rate as a fraction (0.05) or a percentage ("5%")."""
        if isinstance(value, str) and value.strip().endswith("%"):
            return float(value.strip()[:-1]) / 100
        return value

    @field_validator("base_url", "site_url", "sendgrid_host")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("comparisons_feed_url")
    @classmethod
    def _web_feed(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if not value:
            return None
        from digest.importing.feed import url_problem  # only then: it loads the importers (and jsonschema)

        if url_problem(value):
            raise ValueError(f"DIGEST_COMPARISONS_FEED_URL: {url_problem(value)}")
        return value

    @field_validator("site_webhook_url")
    @classmethod
    def _web_webhook(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        value = (value or "").strip()
        parts = urlsplit(value)
        if value and parts.scheme.lower() not in ("http", "https"):
            raise ValueError(f"DIGEST_SITE_WEBHOOK_URL: only http:// and https:// URLs can be pushed to, not {value[:80]!r}")
        if value and not parts.hostname:
            raise ValueError(f"DIGEST_SITE_WEBHOOK_URL: {value[:80]!r} has no host name")
        return value or None

    @field_validator("site_webhook_secret")
    @classmethod
    def _webhook_signed(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if info.data.get("site_webhook_url") and not value.get_secret_value().strip():
            # Unsigned votes would let anyone who finds the site's URL post votes to it.
            raise ValueError("DIGEST_SITE_WEBHOOK_SECRET is required when DIGEST_SITE_WEBHOOK_URL is set: it signs "
                             "every push (X-Digest-Signature). Set both to the values the site was given, or unset "
                             "DIGEST_SITE_WEBHOOK_URL to push nothing")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Europe/Berlin") from exc
        return value

    @model_validator(mode="after")
    def _choose_transport(self) -> "Settings":
        if self.transport is None:
            self.transport = "sendgrid" if self.sendgrid_api_key else "outbox"
        if not self.list_id:
            domain = self.from_email.rpartition("@")[2] or "localhost"
            self.list_id = f"Weekly AI Tool Verdicts <weekly.{domain}>"
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def check_secrets(self) -> None:
        """Refuse to run for real on a missing or placeholder secret (the demo has its own)."""
        if self.demo:
            return
        if self.secret_key.strip().lower() in PLACEHOLDER_SECRETS or self.secret_key == DEMO_SECRET_KEY:
            raise ConfigError(
                "DIGEST_SECRET_KEY is missing or a placeholder: it signs every unsubscribe and tracking link. "
                'Set it to a long random value, e.g. DIGEST_SECRET_KEY="$(python -c '
                "'import secrets; print(secrets.token_urlsafe(32))')\""
            )
        if len(self.secret_key) < 16:
            raise ConfigError("DIGEST_SECRET_KEY is too short: use at least 16 random characters")
        if self.transport == "sendgrid" and self.sendgrid_api_key.strip().lower() in PLACEHOLDER_SECRETS:
            raise ConfigError("DIGEST_TRANSPORT is sendgrid but SENDGRID_API_KEY is missing or a placeholder")
        token = self.api_token.get_secret_value()
        if token and (token.strip().lower() in PLACEHOLDER_SECRETS or len(token) < MIN_API_TOKEN):
            # Unset is fine (the push API is off); a guessable token would let anyone publish to every reader.
            raise ConfigError(
                f"DIGEST_API_TOKEN is a placeholder or shorter than {MIN_API_TOKEN} characters: it lets the comparison "
                "site publish to every subscriber. Set it to a long random value, e.g. DIGEST_API_TOKEN=\"$(python -c "
                "'import secrets; print(secrets.token_urlsafe(32))')\", or leave it unset to keep the push API off"
            )


def demo_settings(workdir: Path, **overrides) -> Settings:
    """Settings for `digest demo`: an SQLite file and an outbox under ``workdir``, a demo-only key."""
    values = dict(
        database_url=f"sqlite:///{workdir / 'demo.db'}",
        outbox_dir=workdir / "outbox",
        secret_key=DEMO_SECRET_KEY,
        transport="outbox",
        demo=True,
    )
    values.update(overrides)
    return Settings(**values)
