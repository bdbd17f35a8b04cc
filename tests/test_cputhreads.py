"""The training job's thread governor, driven by a fake clock and a fake machine."""

from __future__ import annotations

from core.training.cputhreads import ThreadGovernor


class FakeMachine:
    """Images per second for each thread count; the governor's clock advances as steps run."""

    def __init__(self, speeds: dict[int, float]):
        self.speeds, self.now, self.threads, self.calls = speeds, 0.0, None, []

    def set_threads(self, n: int) -> None:
        self.threads = n
        self.calls.append(n)

    def run(self, governor: ThreadGovernor, seconds: float, batch: int = 32) -> None:
        end = self.now + seconds
        while self.now < end:
            self.now += batch / self.speeds[self.threads]
            governor.step(batch)


def make(speeds: dict[int, float], cores: int = 2) -> tuple[ThreadGovernor, FakeMachine]:
    machine = FakeMachine(speeds)
    governor = ThreadGovernor(
        cores, window_s=2.0, reprobe_s=30.0, clock=lambda: machine.now, set_threads=machine.set_threads
    )
    return governor, machine


def test_measures_both_counts_and_keeps_the_faster_on_a_quiet_machine():
    governor, machine = make({1: 900.0, 2: 1400.0})
    machine.run(governor, 20)
    assert governor.rates.keys() == {1, 2}
    assert machine.threads == 2 and governor.threads == 2


def test_a_busy_machine_moves_the_job_to_one_thread_at_once():
    governor, machine = make({1: 900.0, 2: 1400.0})
    machine.run(governor, 20)
    machine.speeds = {1: 770.0, 2: 320.0}  # someone else takes a core
    machine.run(governor, 6)  # one slow window is enough to re-measure one thread, and stay there
    assert machine.threads == 1
    machine.run(governor, 20)
    assert machine.threads == 1


def test_quiet_again_is_noticed_at_the_next_re_measurement():
    governor, machine = make({1: 770.0, 2: 320.0})
    machine.run(governor, 10)
    assert machine.threads == 1
    machine.speeds = {1: 900.0, 2: 1400.0}
    machine.run(governor, 40)  # past reprobe_s: two threads are tried again and win
    assert machine.threads == 2


def test_one_core_leaves_the_thread_count_alone():
    governor, machine = make({1: 500.0}, cores=1)
    machine.run(governor, 20)
    assert set(machine.calls) == {1} and governor.options == [1]


def test_a_pause_between_windows_does_not_count_as_slow_steps():
    governor, machine = make({1: 900.0, 2: 1400.0})
    machine.run(governor, 1)
    machine.now += 60  # evaluation between epochs
    governor.restart()
    machine.run(governor, 2.5)
    assert governor.rates[2][0] > 1000
