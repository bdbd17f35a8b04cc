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

``CpuShare`` does the same job for inference: how the cores are split between the model's torch
threads and the image-decoding threads.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

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


class CpuShare:
    """How a CPU's cores are shared between the model (torch threads) and the decoding threads.

    It starts with half the cores for the model: torch's default (all cores) makes the model's
    threads and the decoders fight, 3x slower for small_cnn on a busy 2-core machine. After the
    second batch (the first pays one-off set-up costs) it compares the CPU time per image of the
    model and of decoding, and a model that costs more than decoding gets every core: resnet18 at
    128x96 went from 60 to ~100 images/s on 2 cores, where small_cnn is faster with one thread.
    Torch's thread count is restored on exit.
    """

    def __init__(self, device: torch.device):
        self.cpu = device.type == "cpu"
        self.cores = os.cpu_count() or 2
        self.decode_seconds = 0.0  # CPU seconds in the decoding threads
        self.decoded = 0
        self.batches = 0

    def __enter__(self) -> CpuShare:
        self.before = torch.get_num_threads()
        if self.cpu:
            torch.set_num_threads(max(1, min(self.before, self.cores // 2)))
        return self

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.before)

    def timed(self, load: Callable[[str], torch.Tensor]) -> Callable[[str], torch.Tensor]:
        def timed_load(path: str) -> torch.Tensor:
            started = time.thread_time()
            try:
                return load(path)
            finally:
                # not atomic across threads: a rare lost update only blurs an estimate
                self.decode_seconds += time.thread_time() - started
                self.decoded += 1

        return timed_load

    @contextlib.contextmanager
    def timing_model(self, images: int) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.batches += 1
        if not self.cpu or self.batches != 2 or not self.decoded:
            return
        model_per_image = (time.perf_counter() - started) * torch.get_num_threads() / max(1, images)
        if model_per_image > self.decode_seconds / self.decoded:
            torch.set_num_threads(max(1, min(self.before, self.cores)))
