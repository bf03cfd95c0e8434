"""One backoff per dependency (S3, Postgres), shared by every ParseJob and by the
records catch-up: while a dependency is away, one try per window instead of one per
ParseJob per tick. The window starts at 1 s and doubles up to 30 s while tries fail; a
success closes it."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

from . import metrics

log = logging.getLogger(__name__)

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 30.0


class Unavailable(Exception):
    """S3 or Postgres cannot be reached right now: try again later."""


class BackingOff(Unavailable):
    """Not tried: the dependency failed a moment ago (Backoff)."""


class Backoff:
    """Callers may run in threads and in the event loop."""

    def __init__(self, what: str, clock=time.monotonic, first: float = FIRST_RETRY_SECONDS,
                 ceiling: float = MAX_RETRY_SECONDS):
        self.what, self.clock, self.first, self.ceiling = what, clock, first, ceiling
        self.delay, self.until, self.reason = 0.0, float("-inf"), ""
        self._lock = threading.Lock()

    def check(self) -> None:
        """Raise BackingOff inside the window."""
        left = self.until - self.clock()
        if left > 0:
            raise BackingOff(f"{self.what} unavailable ({self.reason}); next try in {left:.0f}s")

    @contextlib.contextmanager
    def attempt(self):
        """One try: refused inside the window; an Unavailable from it opens or widens the
        window, anything else closes it (an invalid object is not the store's fault)."""
        self.check()
        try:
            yield
        except Unavailable as exc:
            self.failed(str(exc))
            raise
        except Exception:
            self.succeeded()
            raise
        self.succeeded()

    def seconds_left(self) -> float:
        return max(0.0, self.until - self.clock())

    def failed(self, reason: str) -> None:
        with self._lock:
            now = self.clock()
            if now < self.until:
                return  # a try that started before the window opened: counted already
            self.delay = min(self.ceiling, self.delay * 2 or self.first)
            self.until, self.reason = now + self.delay, reason[:200]

    def succeeded(self) -> None:
        with self._lock:
            self.delay, self.until = 0.0, float("-inf")


def report_unavailable(exc: Unavailable, context: str = "") -> None:
    """A failed try is counted and warned about; a try refused by a Backoff only logged."""
    if isinstance(exc, BackingOff):
        log.debug("%s%s", context, exc)
        return
    metrics.RESULTS_UNAVAILABLE.inc()
    log.warning("%s%s", context, exc)
