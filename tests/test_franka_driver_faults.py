"""franka_driver faults: a robot fault with recovery, and Ctrl-C at random moments of a motion.

A second franky-sim (127.0.0.32) and driver (namespace ``/faulty``) in a module of their own, so
that the first module's simulator and driver are stopped before these start: two real-time
simulators and two 200 Hz drivers on 2 cores starved each other and made joint-state gaps that
were the machine's, not the driver's. Discovery stays on this machine (``conftest``).
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("franky")
pytest.importorskip("franky_sim")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from node_process import REPO, NodeProcess, ros_context, stamp_ns, wait_for  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from test_franka_driver import CHUNK_PERIOD_NS, MS, Reference, driver_process, franky_sim, make_chunk  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from sdm_controller.ros.spin_thread import SpinThread  # noqa: E402

pytestmark = pytest.mark.ros

HOST2 = "127.0.0.32"
NS2 = "/faulty"
NODE2 = "faulty_driver"
#: test-only start of the driver that lets it command up to 110 % of franky's limits, so franky really
#: refuses a motion and faults (franky and franky-sim stay real; nothing is mocked)
FAULTY_DRIVER = """
import sys
import sdm_controller.driver.control_loop as control_loop
control_loop.LIMIT_MARGIN = 1.1
from sdm_controller.ros.franka_driver import main
main(sys.argv)
"""


class Watcher:
    """joint_states, diagnostics, chunks and ~/recover of the driver in NS2 (its own node and thread)."""

    def __init__(self, context) -> None:
        self.node = Node("fault_tester", namespace=NS2, context=context)
        self.lock = threading.Lock()
        self.states: list[tuple[int, float, np.ndarray]] = []  # stamp, receive time, arm q
        self.values: dict[str, str] = {}
        self.diagnostics_at = 0.0
        reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
        self.node.create_subscription(JointState, "joint_states", self._on_state, reliable)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.chunks = self.node.create_publisher(JointTrajectory, "action_chunk", QoSProfile(depth=10))
        self.recover = self.node.create_client(Trigger, f"{NODE2}/recover")
        self.spinner = SpinThread(self.node)

    def _on_state(self, msg: JointState) -> None:
        with self.lock:
            self.states.append((stamp_ns(msg.header.stamp), time.monotonic(), np.asarray(msg.position[:7])))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(NODE2):
                with self.lock:
                    self.values = {kv.key: kv.value for kv in status.values}
                    self.diagnostics_at = time.monotonic()

    def now(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def q(self) -> np.ndarray:
        with self.lock:
            return self.states[-1][2].copy()

    def received_since(self, t: float) -> np.ndarray:
        """Receive times (monotonic s) of the joint_states received after ``t``."""
        with self.lock:
            return np.array([r[1] for r in self.states if r[1] >= t])

    def stamps_received_since(self, t: float) -> np.ndarray:
        """Header stamps (s, the driver's clock at each read) of the joint_states received after ``t``."""
        with self.lock:
            return np.sort(np.array([r[0] / 1e9 for r in self.states if r[1] >= t]))

    def count_stamped_after(self, stamp: int) -> int:
        """joint_states stamped after ``stamp`` (node clock, ns): from a driver started after it."""
        with self.lock:
            return sum(1 for r in self.states if r[0] > stamp)

    def fresh_values(self, timeout: float = 10.0) -> dict[str, str]:
        t = time.monotonic()
        wait_for(lambda: self.diagnostics_at > t, timeout, "fresh diagnostics of the second driver")
        with self.lock:
            return dict(self.values)

    def send_fast_joint7(self, q0: np.ndarray, seconds: float) -> None:
        target = q0.copy()
        target[6] += 1.2
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rows = np.repeat(target[None], 8, axis=0)
            self.chunks.publish(make_chunk(self.now(), rows, velocities=np.zeros((8, 7))))
            time.sleep(0.1)

    def close(self) -> None:
        self.spinner.close()
        self.node.destroy_node()


def flow(stamps: np.ndarray, seconds: float) -> tuple[float, float]:
    """(messages per second over ``seconds``, longest gap in ms between the driver's stamps).

    Gaps are taken between the stamps the driver gave its samples, not between their arrival here:
    a pause of this test process (a garbage collection on a busy machine) delays delivery but is
    not the driver's gap."""
    if len(stamps) < 2:
        return 0.0, float("inf")
    return len(stamps) / seconds, float(np.max(np.diff(stamps)) * 1e3)


@pytest.fixture(scope="module")
def sim2(tmp_path_factory):
    with franky_sim(HOST2, tmp_path_factory.mktemp("sim2") / "franky-sim.log") as process:
        yield process


@pytest.fixture(scope="module")
def watcher():
    with ros_context() as context:
        watcher = Watcher(context)
        try:
            yield watcher
        finally:
            watcher.close()


def start_driver2(log: Path, faulty: bool = False) -> NodeProcess:
    """The driver at HOST2 in NS2; ``faulty``: started through FAULTY_DRIVER."""
    args = ["--params-file", str(REPO / "config" / "franka_driver.yaml"), "-p", f"robot_ip:={HOST2}",
            "-p", "dynamics_factor:=1.0", "-r", f"__node:={NODE2}", "-r", f"__ns:={NS2}"]  # fmt: skip
    if not faulty:
        return driver_process(log, *args)
    script = log.with_suffix(".py")
    script.write_text(FAULTY_DRIVER)
    return NodeProcess(str(script), log, *args, env={"PYTHONFAULTHANDLER": "1"})


def test_joint_states_keep_flowing_while_faulted_and_recovering(sim2, watcher, tmp_path):
    driver2 = start_driver2(tmp_path / "faulty_driver.log", faulty=True)
    try:
        wait_for(lambda: len(watcher.received_since(time.monotonic() - 0.5)) > 20, 60, "joint_states", driver2.log)
        q0 = watcher.q()
        watcher.send_fast_joint7(q0, 0.6)  # franky refuses the motion: a real robot fault
        wait_for(lambda: watcher.values.get("robot fault"), 10, "a robot fault", driver2.log)
        assert "exceeds maximum velocity" in watcher.values["robot fault"]
        # faulted: the policy keeps sending; joint_states must keep flowing, from franky's state
        start = time.monotonic()
        watcher.send_fast_joint7(q0, 2.0)
        faulted = flow(watcher.stamps_received_since(start), time.monotonic() - start)
        values = watcher.fresh_values()
        assert values["robot fault"] and values["joint_states"] == "publishing"
        # recovering, then recovered
        assert watcher.recover.wait_for_service(timeout_sec=10)
        start = time.monotonic()
        future = watcher.recover.call_async(Trigger.Request())
        wait_for(future.done, 15, "the ~/recover response", driver2.log)
        time.sleep(1.0)
        recovering = flow(watcher.stamps_received_since(start), time.monotonic() - start)
        print(
            f"\nfaulted: joint_states {faulted[0]:.0f} Hz, longest gap {faulted[1]:.0f} ms; recovery "
            f"({future.result().message}): {recovering[0]:.0f} Hz, longest gap {recovering[1]:.0f} ms"
        )
        assert future.result().success, future.result().message
        assert watcher.fresh_values()["robot fault"] == ""
        # 200 Hz configured; on a loaded 2-core machine the typical measured rate is 150-200 Hz
        assert faulted[0] >= 100 and recovering[0] >= 100
        assert faulted[1] < 250 and recovering[1] < 250
    finally:
        assert driver2.proc.poll() is None, driver2.log()
        assert driver2.stop() == 0, driver2.log()


def test_ctrl_c_at_random_moments_during_motion_exits_0(sim2, watcher, tmp_path):
    rng = np.random.default_rng(7)
    results = []
    for run in range(10):
        started = watcher.now()
        driver2 = start_driver2(tmp_path / f"driver-{run}.log")
        try:
            # from this driver: late joint_states of the previous one must not pass for it
            wait_for(lambda s=started: watcher.count_stamped_after(s) > 10, 60, "joint_states", driver2.log)
            q0 = watcher.q()
            reference = Reference(q0, watcher.now() + 50 * MS, frequency=1.0)
            end = time.monotonic() + rng.uniform(0.1, 1.2)  # a random moment of the motion
            while time.monotonic() < end:
                stamp = watcher.now()
                offsets = (np.arange(8) + 1) * CHUNK_PERIOD_NS
                watcher.chunks.publish(make_chunk(stamp, reference(stamp + offsets)))
                time.sleep(min(0.1, max(0.0, end - time.monotonic())))
            driver2.proc.send_signal(signal.SIGINT)
            if run % 2:  # a launcher forwards Ctrl-C to its process group: a second one, mid-shutdown
                time.sleep(rng.uniform(0.0, 0.3))
                if driver2.proc.poll() is None:
                    driver2.proc.send_signal(signal.SIGINT)
            driver2.proc.wait(20)
        finally:
            code = driver2.stop()
        results.append(code)
        assert code == 0, f"run {run}: exit {code}\n{driver2.log()}"
    print(f"\n10 Ctrl-C during motion: exit codes {results}")
