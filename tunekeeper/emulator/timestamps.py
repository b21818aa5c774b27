"""Timestamps as Google's JSON renders them (RFC 3339, UTC, `Z`)."""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
