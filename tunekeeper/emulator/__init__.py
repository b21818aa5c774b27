"""A local stand-in for the Gemini API's model-tuning service (see README.md in this directory)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tunekeeper.emulator.config import EmulatorConfig, parse_faults, parse_latency

if TYPE_CHECKING:
    from tunekeeper.emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "parse_faults", "parse_latency"]


def __getattr__(name: str) -> Any:
    # The server pulls in aiohttp; importing the configuration alone (as the CLI does) stays cheap.
    if name == "Emulator":
        from tunekeeper.emulator.server import Emulator

        return Emulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
