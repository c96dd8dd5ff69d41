"""Pebble's log forwarding to COS: tests/log_forwarding_cases.py, on this charm."""

from __future__ import annotations

from tests.log_forwarding_cases import LogForwardingCases


class TestLogForwarding(LogForwardingCases):
    pass
