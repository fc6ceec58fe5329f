"""Time for waits under test: it moves only when the waiter sleeps, so a wait of hours (or ARM's
Retry-After of ten seconds) costs nothing and every sleep is recorded."""

from __future__ import annotations

from phi3_infra.azure.arm import Poll


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def fake_poll(timeout_s: float = 3600, interval_s: float = 60) -> tuple[Poll, FakeClock]:
    """A Poll on a fresh FakeClock, and the clock."""
    clock = FakeClock()
    return Poll(timeout_s=timeout_s, interval_s=interval_s, clock=clock, sleep=clock.sleep), clock
