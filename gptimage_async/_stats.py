"""Counters a session keeps about its own traffic."""

from __future__ import annotations

import collections

__all__ = ["SessionStats"]


class SessionStats:
    """What a session has sent and seen. Read it for progress displays and benchmarks.

    ``lateness`` holds recent scheduler lateness samples: how long after its
    planned time each poll was taken off the heap, in seconds.
    """

    __slots__ = (
        "connection_errors",
        "create_retries",
        "creates",
        "lateness",
        "poll_errors",
        "polls",
        "rate_limited",
        "requests",
        "server_errors",
        "speculative_polls",
        "tail_creates",
        "uncertain_creates",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.creates = 0
        self.polls = 0
        self.speculative_polls = 0
        #: Creates a bulk job's tail sent ahead of polls (``PRIORITY_LAST_CREATE``).
        self.tail_creates = 0
        self.rate_limited = 0
        self.server_errors = 0
        self.connection_errors = 0
        self.poll_errors = 0
        self.create_retries = 0
        self.uncertain_creates = 0
        self.lateness: collections.deque[float] = collections.deque(maxlen=20_000)

    def as_dict(self) -> dict[str, int]:
        """The counters (not the lateness samples) as a plain dict."""
        return {name: getattr(self, name) for name in self.__slots__ if name != "lateness"}

    def __repr__(self) -> str:
        fields = " ".join(f"{k}={v}" for k, v in self.as_dict().items() if v)
        return f"<SessionStats {fields}>"
