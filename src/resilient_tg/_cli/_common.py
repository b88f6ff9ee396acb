"""What every subcommand shares: exit codes and the one error type they raise."""

from __future__ import annotations

__all__ = [
    "EXIT_AUTH",
    "EXIT_CODES_HELP",
    "EXIT_INTERRUPTED",
    "EXIT_NETWORK",
    "EXIT_OK",
    "EXIT_REJECTED",
    "EXIT_STORE",
    "EXIT_UNHEALTHY",
    "EXIT_USAGE",
    "CliError",
]

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2
EXIT_STORE = 3
EXIT_AUTH = 4
EXIT_NETWORK = 5
EXIT_REJECTED = 6
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    success (status/check: the link is healthy)
  1    status/check: not healthy; demo: a message was lost or duplicated
  2    usage error
  3    store error (corrupt or unreadable session, session in use, store unreachable)
  4    authorization error (login failed, the key is no longer accepted)
  5    network error (could not connect in time)
  6    the server refuses the app's api_id/api_hash (API_ID_INVALID...): fix the configuration
  130  interrupted"""


class CliError(Exception):
    """A failure the command reports in one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
