"""How many CPU threads torch should use while a job trains, chosen by measuring, not guessing.

On an idle 2-core machine two torch threads train small_cnn ~1.45x faster than one. As soon as
anything else wants a core (the app drawing pages for several people, a browser, a second job), two
threads become *slower* than one, and by far: measured 1376 -> 325 images/s with one busy process
beside the job, where one thread kept 769. Each op waits at a barrier for the thread the scheduler
took away. No fixed setting is right for both cases, so the job measures: it trains for a short
window with each candidate count, keeps the faster, and re-measures the other every so often,
because the machine gets busy and quiet again.

    governor = ThreadGovernor()          # candidates 1 and all cores; does nothing on one core
    governor.restart()                   # before each stretch of steps (not counting evaluation)
    for batch in batches:
        ...train on batch...
        governor.step(len(batch))
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch

DROP = 0.7  # a window this much slower than the last one with the same count means the load changed


class ThreadGovernor:
    def __init__(
        self,
        max_threads: int | None = None,
        window_s: float = 2.0,
        reprobe_s: float = 30.0,
        clock: Callable[[], float] = time.perf_counter,
        set_threads: Callable[[int], None] = torch.set_num_threads,
    ):
        most = max(1, int(max_threads or os.cpu_count() or 1))
        self.options = sorted({1, most})
        self.window_s, self.reprobe_s = window_s, reprobe_s
        self._clock, self._set_threads = clock, set_threads
        self.rates: dict[int, tuple[float, float]] = {}  # threads -> (images/s, when measured)
        self.threads = most
        self._set_threads(most)
        self.restart()

    def restart(self) -> None:
        """Start a new measuring window (after a pause such as evaluation, which must not count)."""
        self._started, self._images = self._clock(), 0

    def step(self, images: int) -> None:
        """Count one training step's images; at the end of a window, record its speed and choose again."""
        self._images += images
        now = self._clock()
        elapsed = now - self._started
        if elapsed < self.window_s:
            return
        rate = self._images / elapsed
        before = self.rates.get(self.threads)
        if before is not None and rate < DROP * before[0]:  # the machine got busier: the others' figures are old
            self.rates = {n: r for n, r in self.rates.items() if n == self.threads}
        self.rates[self.threads] = (rate, now)
        choice = self.choose(now)
        if choice != self.threads:
            self.threads = choice
            self._set_threads(choice)
        self.restart()

    def choose(self, now: float) -> int:
        """An option never measured or measured too long ago first; otherwise the fastest."""
        stale = [n for n in self.options if n not in self.rates or now - self.rates[n][1] > self.reprobe_s]
        if stale:
            return stale[0]
        return max(self.options, key=lambda n: self.rates[n][0])
