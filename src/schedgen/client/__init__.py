"""The `schedgen` jobs client: submit PDFs to the upload API, follow jobs, fetch events.

Needs the `cli` extra (httpx, rich), which the runner image never installs; the modules
that import them are loaded only when a client command runs (`require_extra`).
Exit codes are the `EXIT_*` constants below (docs/cli.md).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_JOB_FAILED = 1  # the job (or one of them) ended Failed or Cancelled
EXIT_USAGE = 2  # bad arguments (argparse's own code), refused confirmation
EXIT_CONFIG = 3  # no API URL, unreadable config file, the cli extra missing, the API key rejected
EXIT_API = 4  # the API answered with an error, or could not be reached
EXIT_NOT_FOUND = 5  # no such job (or not the key's tenant's)

EXIT_CODES_HELP = (
    "exit codes: 0 ok; 1 a job Failed or was Cancelled; 2 usage error; 3 configuration "
    "(no API URL, bad config file, `cli` extra missing, API key rejected); 4 API error or "
    "unreachable; 5 job not found"
)


class ClientError(Exception):
    """A client failure with its exit code and a stable code word for messages."""

    exit_code = EXIT_API

    def __init__(self, code: str, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(ClientError):
    exit_code = EXIT_CONFIG


def require_extra() -> None:
    """Fail clearly when the `cli` extra (httpx, rich) is not installed."""
    missing = []
    for name in ("httpx", "rich"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError("MissingExtra", f"the jobs client needs {' and '.join(missing)}: "
                          "install it with `pip install 'schedgen[cli]'`")
