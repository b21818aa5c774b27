"""What every part of the running daemon shares: the store, the service, the settings and who we are."""

from __future__ import annotations

from dataclasses import dataclass

from tunekeeper.backends.gemini.backend import TuningBackend
from tunekeeper.config import Settings
from tunekeeper.daemon.metrics import Metrics
from tunekeeper.db.store import JobStore


@dataclass
class DaemonContext:
    store: JobStore
    backend: TuningBackend
    settings: Settings  # replaced whole on SIGHUP; parts read it afresh each time they use it
    owner: str  # names this replica as the holder of leases
    metrics: Metrics
