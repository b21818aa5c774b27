"""The process's exit statuses, in one place (README, "Exit statuses"), and the error that carries one.

The numbers are sysexits.h's, so that systemd's unit can tell a lasting problem (78: restarting will not fix it,
`RestartPreventExitStatus=78`) from one a restart may cure (69, 75).
"""

from __future__ import annotations

from tunekeeper.config import EX_CONFIG

EX_USAGE_ARGUMENT = 2  # a bad command-line argument (argparse's own status)
EX_UNAVAILABLE = 69  # something the daemon needs is not there now: the database server, the port, the file
EX_TEMPFAIL = 75  # the SQLite file was deleted or replaced under the running daemon: start again on the new one

__all__ = ["EX_CONFIG", "EX_TEMPFAIL", "EX_UNAVAILABLE", "EX_USAGE_ARGUMENT", "StartupFailed"]


class StartupFailed(Exception):
    """What stops a command or the daemon from starting: one line naming the problem (and the path or host it
    concerns, never a password), `problem` a short stable name for the log, and the exit status."""

    def __init__(self, message: str, *, problem: str, status: int) -> None:
        super().__init__(message)
        self.problem = problem
        self.status = status
