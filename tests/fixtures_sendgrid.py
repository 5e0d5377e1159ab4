"""Fixtures for the SendGrid transport: a local SendGrid-compatible server and a transport pointed at it.

Registered in tests/conftest.py with ``pytest_plugins = ["tests.fixtures_sendgrid"]``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from digest.transports.sendgrid import SendGridTransport
from tests.sendgrid_server import FakeSendGrid


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    """A FakeSendGrid on a free 127.0.0.1 port, stopped after the test."""
    with FakeSendGrid() as server:
        yield server


@pytest.fixture
def sendgrid_transport(fake_sendgrid: FakeSendGrid) -> SendGridTransport:
    """A SendGridTransport talking to `fake_sendgrid`, with a 2-second timeout."""
    return SendGridTransport(api_key=fake_sendgrid.api_key, host=fake_sendgrid.url, timeout=2.0)
