"""scheduler.py: the weekly cron trigger in the configured zone, plus the hourly catch-up."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

import scheduler
from digest.config import Settings
from digest.claim.weeks import slot


class StubServices:
    def __init__(self, settings):
        self.settings = settings


def test_the_weekly_job_fires_at_the_schedule_in_the_configured_zone():
    "Thursday 09:00 Berlin time: the cron job's next fire time is the week's slot; a catch-up job ticks hourly"
    settings = Settings(send_schedule="0 9 * * thu", timezone="Europe/Berlin", secret_key="k" * 32)
    jobs = {job.id: job for job in scheduler.build_scheduler(StubServices(settings), sender=None).get_jobs()}
    assert set(jobs) == {"weekly", "catch-up", "sunset"}  # the sunset's daily job: tests/test_sunset.py
    berlin = ZoneInfo("Europe/Berlin")
    monday = datetime(2026, 11, 23, tzinfo=berlin)
    fire = jobs["weekly"].trigger.get_next_fire_time(None, monday)
    assert fire == datetime(2026, 11, 26, 9, 0, tzinfo=berlin)
    assert fire == slot("2026-W48", schedule=settings.send_schedule, tz=berlin)
    tick = jobs["catch-up"].trigger
    first = tick.get_next_fire_time(None, monday)
    assert tick.get_next_fire_time(first, first) - first == timedelta(hours=1)
    assert jobs["weekly"].max_instances == 1 and jobs["weekly"].coalesce


def test_a_bad_schedule_is_refused_at_start(monkeypatch, capsys):
    "DIGEST_SEND_SCHEDULE that is not a crontab line: exit 2 with the reason, before anything runs"
    monkeypatch.setenv("DIGEST_SEND_SCHEDULE", "every thursday")
    monkeypatch.setenv("DIGEST_SECRET_KEY", "k" * 32)
    assert scheduler.main([]) == 2
    assert "error" in capsys.readouterr().err


def test_a_placeholder_secret_stops_the_scheduler(monkeypatch, capsys):
    "DIGEST_SECRET_KEY=changeme: the scheduler refuses to start"
    monkeypatch.setenv("DIGEST_SECRET_KEY", "changeme")
    assert scheduler.main(["--once"]) == 2
    assert "DIGEST_SECRET_KEY" in capsys.readouterr().err
