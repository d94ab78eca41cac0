"""Engine changes of the policy node without ROS: the quick checks, one background load at a time,
the hand-over at the first cycle after the warm-up, and a failed load that keeps the running engine.

The artifacts are real (the quick checks read them); the loads are fakes that wait until the test
lets them finish, so a test decides when an engine is warm.
"""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
from node_process import wait_for

from sdm_controller.bench.untrained_artifact import write_untrained_artifact
from sdm_controller.common.report import ERROR
from sdm_controller.control.controller import NO_POLICY, WAITING, PolicyController
from sdm_controller.control.engine_swap import EngineSwap
from sdm_controller.control.settings import NodeSettings
from sdm_controller.errors import SdmError

T0 = 1_700_000_000 * 1_000_000_000
OOM = "CUDA out of memory (simulated)"


class FakeRunner:
    backend_name = "fake"

    def __init__(self, artifact: str) -> None:
        self.artifact = artifact
        self.last_timing = {"total_ms": 1.0}
        self.closed = False

    def __call__(self, obs):
        return np.zeros((8, 8), np.float32)

    def close(self) -> None:
        self.closed = True

    def __repr__(self) -> str:
        return f"FakeRunner({self.artifact!r})"


class Loader:
    """Stands in for ``load_runner``: a load waits until :meth:`finish` (its warm-up), then gives a
    :class:`FakeRunner`, or raises ``failure`` when one is set."""

    def __init__(self) -> None:
        self.started: queue.Queue[NodeSettings] = queue.Queue()
        self.runners: list[FakeRunner] = []
        self.failure: Exception | None = None
        self._warm = threading.Semaphore(0)

    def __call__(self, settings: NodeSettings) -> FakeRunner:
        self.started.put(settings)
        assert self._warm.acquire(timeout=30), "the test never finished this load"
        if self.failure is not None:
            raise self.failure
        self.runners.append(FakeRunner(settings.artifact))
        return self.runners[-1]

    def next_load(self) -> NodeSettings:
        return self.started.get(timeout=10)

    def finish(self) -> None:
        self._warm.release()


class Lines:
    """A logger that keeps its lines."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def error(self, message: str) -> None:
        self.lines.append(("error", message))

    def text(self, level: str) -> str:
        return "\n".join(message for at, message in self.lines if at == level)


class Harness:
    """An :class:`EngineSwap` on a controller, with a fake loader, a log and a readiness event."""

    def __init__(self, settings: NodeSettings, **kwargs) -> None:
        self.loader, self.log, self.ready = Loader(), Lines(), threading.Event()
        self.controller = PolicyController(settings)
        self.swap = EngineSwap(self.controller, settings, load=self.loader, on_ready=self.ready.set, log=self.log,
                               **kwargs)
        self.now = T0

    def step(self):
        self.now += 100_000_000
        return self.controller.step(self.now)

    def finish_load(self):
        """Let the load warm up; the next cycle's result (the swap)."""
        self.ready.clear()
        self.loader.finish()
        assert self.ready.wait(10), self.log.lines
        return self.step()

    def wait_until_loaded(self) -> None:
        wait_for(lambda: not self.controller.loading, 10, "the load to end")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine_swap")
    a = write_untrained_artifact(root / "a", cameras=("wrist",), image_size=(16, 16), seed=0)
    b = write_untrained_artifact(root / "b", cameras=("wrist",), image_size=(16, 16), seed=1)
    return str(a), str(b)


@pytest.fixture
def running(artifacts):
    """A harness running artifact a; closed after the test."""
    harness = Harness(NodeSettings(artifact=artifacts[0]))
    harness.swap.start()
    harness.loader.next_load()
    assert harness.finish_load().swapped.artifact == artifacts[0]
    yield harness
    harness.swap.close()


def test_an_engine_takes_over_at_the_first_cycle_after_its_warm_up(artifacts):
    a, b = artifacts
    h = Harness(NodeSettings(artifact=a))
    h.swap.start()
    assert h.loader.next_load().artifact == a
    assert h.controller.loading == a
    result = h.step()
    assert result.status == NO_POLICY and result.swapped is None  # still warming up
    result = h.finish_load()
    assert result.swapped.artifact == a and result.status == WAITING
    assert h.controller.loading == "" and "engine ready: FakeRunner" in h.log.text("info")
    first = h.controller.policy.runner

    h.swap.accept({"artifact": b})
    assert h.loader.next_load().artifact == b and h.controller.loading == b
    assert h.step().swapped is None and h.controller.policy.runner is first  # a runs while b warms up
    assert h.finish_load().swapped.artifact == b
    assert h.controller.policy.runner is h.loader.runners[-1] and first.closed
    h.swap.close()


def test_one_load_at_a_time_a_second_engine_change_is_refused_until_it_is_ready(artifacts, running):
    a, b = artifacts
    h = running
    h.swap.accept({"artifact": b})
    h.loader.next_load()
    with pytest.raises(SdmError, match=f"an engine for '{b}' is still loading"):
        h.swap.accept({"backend": "torch"})
    assert h.swap.settings.backend == "auto" and h.swap.settings.artifact == b
    h.swap.accept({"executed_steps": 4, "device": "cpu"})  # no new engine: applies at the next cycle
    assert h.swap.settings.executed_steps == 4
    assert h.finish_load().swapped.artifact == b
    h.swap.accept({"backend": "torch"})  # the load is done: the next engine change starts one
    assert h.loader.next_load().backend == "torch"
    assert h.finish_load().swapped.artifact == b
    assert h.loader.started.empty()


def test_a_failed_load_keeps_the_running_engine_and_sets_the_change_back(artifacts, running):
    a, b = artifacts
    h = running
    first = h.controller.policy.runner
    h.loader.failure = RuntimeError(OOM)
    h.swap.accept({"artifact": b})
    h.loader.next_load()
    h.swap.accept({"executed_steps": 3})  # beside the load: its own change is fine and stays
    h.loader.finish()
    h.wait_until_loaded()
    wait_for(lambda: h.swap.settings.artifact == a, 10, "the artifact set back")
    assert f"loading '{b}' failed: {OOM}" in h.controller.error
    assert "the running engine stays and ['artifact'] are set back" in h.log.text("error")
    assert h.swap.settings.executed_steps == 3
    result = h.step()
    assert result.swapped is None and h.controller.policy.runner is first and not first.closed

    h.loader.failure = None
    h.swap.accept({"artifact": b})  # a's engine runs again, so b is a new engine
    assert h.loader.next_load().artifact == b
    assert h.finish_load().swapped.artifact == b
    assert h.controller.error == ""


def test_the_node_sets_its_parameters_back_through_revert(artifacts):
    a, b = artifacts
    reverted: list[dict] = []
    h = Harness(NodeSettings(artifact=a), revert=reverted.append)
    h.swap.start()
    h.loader.next_load()
    h.finish_load()
    h.loader.failure = RuntimeError(OOM)
    h.swap.accept({"artifact": b, "executed_steps": 2})  # atomic: both changes belong to the load
    h.loader.next_load()
    h.loader.finish()
    wait_for(lambda: reverted, 10, "the revert")
    assert reverted == [{"artifact": a, "executed_steps": 0}]
    h.swap.close()


def test_a_failed_first_load_leaves_no_engine_and_says_why(artifacts):
    a, _ = artifacts
    reverted: list[dict] = []
    h = Harness(NodeSettings(artifact=a), revert=reverted.append)
    h.loader.failure = RuntimeError(OOM)
    h.swap.start()
    h.loader.next_load()
    h.loader.finish()
    h.wait_until_loaded()
    wait_for(lambda: h.controller.error, 10, "the error")
    assert h.controller.error == f"loading '{a}' failed: {OOM}"
    assert "the node publishes nothing until a valid artifact is set" in h.log.text("error")
    assert reverted == []  # nothing ran: nothing to set back
    assert h.step().status == NO_POLICY
    report = h.controller.report(h.now)
    assert report.level == ERROR and OOM in report.message

    h.loader.failure = None
    h.swap.accept({"artifact": a})  # setting it again tries again
    assert h.loader.next_load().artifact == a
    assert h.finish_load().swapped.artifact == a
    h.swap.close()


def test_without_a_usable_artifact_nothing_loads_and_the_start_says_why(tmp_path):
    h = Harness(NodeSettings())
    h.swap.start()
    assert h.controller.error.startswith("no artifact set: set the 'artifact' parameter")
    missing = str(tmp_path / "missing")
    h = Harness(NodeSettings(artifact=missing))
    h.swap.start()
    assert h.controller.error.startswith(f"cannot run artifact '{missing}'") and "does not exist" in h.controller.error
    assert "publishes nothing until a valid artifact is set" in h.log.text("error")
    assert h.loader.started.empty() and h.controller.loading == ""


def test_a_change_that_cannot_work_is_refused_and_changes_nothing(artifacts, running, tmp_path):
    h = running
    before = h.swap.settings
    for changes, words in [
        ({"artifact": str(tmp_path / "missing")}, "does not exist"),
        ({"executed_steps": 9}, "predicts 8 actions"),
        ({"joint_position_lower": [0.0, 0.0]}, "has 2 values"),
        ({"blending": "average"}, "expected one of"),
    ]:
        with pytest.raises(SdmError, match=words):
            h.swap.accept(changes)
    assert h.swap.settings == before and h.loader.started.empty()


def test_after_a_failed_start_any_change_may_make_the_artifact_usable(artifacts):
    a, _ = artifacts
    h = Harness(NodeSettings(artifact=a, executed_steps=9))
    h.swap.start()
    assert "predicts 8 actions" in h.controller.error
    h.swap.accept({"blending": "exponential"})  # accepted; the artifact still cannot run
    assert h.loader.started.empty() and "predicts 8 actions" in h.controller.error
    h.swap.accept({"executed_steps": 0})
    assert h.loader.next_load().artifact == a
    assert h.finish_load().swapped.artifact == a
    h.swap.close()


def test_the_sampler_is_no_new_engine_for_a_one_step_artifact(running):
    h = running
    h.swap.accept({"sampler_steps": 20, "sampler": "ddpm"})
    assert h.swap.settings.sampler_steps == 20
    assert h.loader.started.empty() and h.controller.loading == ""


def test_a_load_that_ends_after_close_is_not_handed_over(artifacts):
    a, _ = artifacts
    h = Harness(NodeSettings(artifact=a))
    h.swap.start()
    h.loader.next_load()
    threading.Timer(0.2, h.loader.finish).start()  # warm only once close has begun
    h.swap.close()
    assert h.loader.runners[0].closed and not h.ready.is_set()
    assert h.controller.pending_interface is None
