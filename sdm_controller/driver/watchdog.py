"""The command watchdog: fresh while a chunk arrived less than ``timeout_ns`` ago."""

from __future__ import annotations


class Watchdog:
    def __init__(self, timeout_ns: int) -> None:
        self.timeout_ns = int(timeout_ns)
        self.last_feed_ns: int | None = None
        self.trips = 0  # how often it expired while something was running

    def feed(self, now_ns: int) -> None:
        self.last_feed_ns = int(now_ns)

    def clear(self) -> None:
        self.last_feed_ns = None

    def expired(self, now_ns: int) -> bool:
        return self.last_feed_ns is None or now_ns - self.last_feed_ns > self.timeout_ns

    def age_ns(self, now_ns: int) -> int | None:
        return None if self.last_feed_ns is None else now_ns - self.last_feed_ns
