"""What every subcommand shares: exit codes and the one error type they raise.

One code per situation, whichever command meets it (the table is in docs/deploying.md,
"Exit codes", and in ``resilient-tg --help``).
"""

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
# The server refused the app's api_id/api_hash; fix the configuration.
EXIT_REJECTED = 6
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0    success (status/check: the client is healthy)
  1    not healthy (status, check); demo: a message was lost or duplicated;
       fleet rebalance --wait: the workers were not balanced in time
  2    usage: bad arguments or store URL, a target that cannot keep a session
       (memory://, env:// without fallback), a missing optional dependency
  3    session or store: none there (missing, empty, no auth key), corrupt or
       unreadable, in use by a live process, unreachable, cannot be written, or the
       target already holds a session or file (--force replaces it)
  4    authorization: the login failed, or the key is no longer accepted (AUTH_LOST)
  5    network: could not connect within the time allowed, or the link was lost
  6    rejected: the server refused the app's api_id/api_hash; fix the configuration
  130  interrupted (Ctrl-C)"""


class CliError(Exception):
    """A failure the command reports in one line on stderr, with an exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code
