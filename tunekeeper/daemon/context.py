"""What every part of the running daemon shares: the store, the service, the settings and who we are."""

from __future__ import annotations

from dataclasses import dataclass, field

from tunekeeper.backends.port import Owner, RemoteRef, TuningBackend
from tunekeeper.config import Settings
from tunekeeper.daemon.breaker import DispatchBreaker
from tunekeeper.daemon.budget import RequestBudget
from tunekeeper.daemon.metrics import Metrics
from tunekeeper.db.records import Job
from tunekeeper.db.store import JobStore


@dataclass
class DaemonContext:
    store: JobStore
    backend: TuningBackend
    settings: Settings  # replaced whole on SIGHUP; parts read it afresh each time they use it
    owner: str  # names this replica as the holder of leases
    metrics: Metrics
    deployment: str  # the database's identity: the mark on all the work its jobs start
    breaker: DispatchBreaker = field(init=False)  # whether the service may be sent jobs now
    budget: RequestBudget = field(init=False)  # the request rate creates and evaluation calls share

    def __post_init__(self) -> None:
        self.breaker = DispatchBreaker(self.metrics, lambda: self.settings.daemon)
        self.budget = RequestBudget(lambda: self.settings.tuning)

    def owner_of(self, job: Job) -> Owner:
        return Owner(self.deployment, job.id)

    def remote(self, job: Job) -> RemoteRef:
        """Where the job's remote work is, as its row knows it."""
        return RemoteRef(self.owner_of(job), job.operation_name, job.tuned_model_name, job.tuned_model_id)
