"""A local stand-in for the Gemini API's model-tuning service (see README.md in this directory)."""

from tunekeeper.emulator.config import EmulatorConfig, parse_faults, parse_latency
from tunekeeper.emulator.server import Emulator

__all__ = ["Emulator", "EmulatorConfig", "parse_faults", "parse_latency"]
