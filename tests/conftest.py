"""Shared settings and fixtures of the sdm_controller test suite.

The environment is set at import time, before any test module imports torch, MuJoCo or (in
subprocesses) rclpy:

* ROS 2 / DDS discovers peers by UDP multicast. A test must never announce itself to, or talk
  with, nodes on other machines of the network (a real robot could be listening), so discovery
  is pinned to this host with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``. These two variables
  are set unconditionally: a value inherited from the developer's shell (e.g. ``SUBNET``) must
  not win.
* ``ROS_DOMAIN_ID`` is derived from the pid so that two test runs on the same machine (or a test
  run next to a developer's nodes on the default domain 0) do not see each other's topics. It
  stays in 2..101, the range whose DDS ports cannot collide with Linux's ephemeral ports.
* MuJoCo renders headless through EGL (the caller may choose another backend).
* torch uses 2 intra-op threads (the CI machines have 2 cores), and its OpenMP workers sleep
  instead of spin-waiting at barriers (``OMP_WAIT_POLICY=PASSIVE``, inherited by the CLI
  subprocesses too): with other work on the same 2 cores, spinning workers wait for a preempted
  sibling and a tiny-UNet sampler call goes from ~60 ms to ~5 s.

A failed test's teardown is watched too (:func:`pytest_exception_interact`).
"""

from __future__ import annotations

import os

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(2 + os.getpid() % 100)
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # read once, when torch loads its OpenMP runtime

import faulthandler  # noqa: E402
import io  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(2)

STATE_DIM = 39
ACTION_DIM = 4
#: how long a failed test's teardown may take before the run ends with every thread's stack
FAILED_TEARDOWN_LIMIT_S = 240.0
_watchdog_fd: int | None = None
_watchdog: threading.Timer | None = None


def pytest_configure(config) -> None:
    global _watchdog_fd
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        fd = sys.__stderr__.fileno()
    _watchdog_fd = os.dup(fd)  # the terminal's stderr, which test output capture leaves alone


def _end_the_run(nodeid: str, failure: str) -> None:
    os.write(_watchdog_fd, (
        f"\n[conftest] {nodeid} failed and its teardown has not ended after {FAILED_TEARDOWN_LIMIT_S:g} s; "
        f"the run stops. The failure:\n{failure}\n[conftest] every thread's stack:\n"
    ).encode())
    faulthandler.dump_traceback(file=_watchdog_fd, all_threads=True)
    os._exit(1)


@pytest.hookimpl(trylast=True)
def pytest_exception_interact(node, call, report) -> None:
    """Once a test has failed, pytest's faulthandler_timeout and pytest-timeout both stop watching it
    (they make way for a debugger), so a teardown that then hangs (stopping a node, a simulator)
    stalls the whole run in silence: CI once sat 40 minutes after an ``F`` that way. Re-arm a
    watchdog for the rest of this test that prints the failure and every thread's stack and ends
    the run; faulthandler backs it up in case the hung call holds the GIL."""
    global _watchdog
    if _watchdog_fd is None or not isinstance(node, pytest.Item):  # a collection error has no teardown
        return
    _watchdog = threading.Timer(FAILED_TEARDOWN_LIMIT_S, _end_the_run, args=(node.nodeid, report.longreprtext))
    _watchdog.daemon = True
    _watchdog.start()
    faulthandler.dump_traceback_later(FAILED_TEARDOWN_LIMIT_S + 30, exit=True, file=_watchdog_fd)


def pytest_runtest_logfinish(nodeid, location) -> None:
    global _watchdog
    if _watchdog is not None:
        _watchdog.cancel()
        _watchdog = None
    faulthandler.cancel_dump_traceback_later()


def make_stats(**dims: int) -> dict[str, dict[str, list[float]]]:
    """Normalizer statistics [-1, 1] for each ``key=dim`` (``action`` defaults to 4 dims)."""
    dims = {"action": ACTION_DIM, **dims}
    return {key: {"min": [-1.0] * d, "max": [1.0] * d} for key, d in dims.items()}


@pytest.fixture
def tiny_stats():
    """``tiny_stats(state=39)`` → normalizer stats for those keys plus a 4-d action."""
    return make_stats


@pytest.fixture(scope="session")
def drawer_dataset(tmp_path_factory) -> Path:
    """Three successful drawer-open expert demos (state observations), about 2 s."""
    from sdm_controller.data.metaworld_demos import collect_metaworld

    path = tmp_path_factory.mktemp("data") / "dw.zarr"
    episodes, _ = collect_metaworld("drawer-open", path, num_demos=3, progress=False)
    assert episodes.num_episodes == 3
    return path


@pytest.fixture(scope="session")
def tiny_teacher(drawer_dataset, tmp_path_factory) -> Path:
    """A teacher artifact folder trained for 5 steps on ``drawer_dataset`` (tiny UNet)."""
    from sdm_controller.training.teacher import TrainConfig, train_teacher

    out = tmp_path_factory.mktemp("teacher") / "teacher"
    config = TrainConfig(steps=5, batch_size=8, policy={"unet_preset": "tiny"})
    train_teacher(drawer_dataset, out, config, progress=False)
    return out


@pytest.fixture(scope="session")
def drawer_episodes(drawer_dataset):
    from sdm_controller.data.episodes import load_episodes

    return load_episodes(drawer_dataset)


def state_window(episodes, batch: int = 3, n_obs_steps: int = 2) -> dict[str, torch.Tensor]:
    """(batch, n_obs_steps, 39) raw state windows taken from the dataset's first frames."""
    state = episodes.obs["state"]
    rows = np.stack([state[i : i + n_obs_steps] for i in range(0, batch * 7, 7)])
    return {"state": torch.from_numpy(rows)}
