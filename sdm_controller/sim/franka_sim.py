"""franky-sim running in this process: the work cell, the libfranka server, the task, snapshots.

:class:`FrankaSim` owns a ``MujocoSimulator`` with the scene of
:mod:`sdm_controller.sim.franka_scene` and a ``franky_sim.SimulationServer`` bound to one
loopback ``hostname`` (TCP port 1337 plus the gripper's port), so ``franky.Robot(hostname)``
connects to it exactly as to a real FR3. The physics runs in its own thread at 1 kHz.

Threads: all reads and writes of the live ``MjData`` happen in the simulation thread. Other
threads ask for them with :meth:`FrankaSim.call_in_sim` (run a function between two steps and
wait for its result): :meth:`snapshot` (joint positions for the camera), :meth:`reset_task`
(new episode). The task's success check runs after every step; its newest
:class:`~sdm_controller.sim.franka_task.TaskState` is :attr:`FrankaSim.task_state` and every
change of ``success`` is queued for :meth:`success_changes`.

For a scripted expert (issue 7) in the same process: :attr:`model`, :attr:`index` (the TCP site,
the cube's body, the arm's joints), :attr:`task_state` (cube and TCP positions), and
:meth:`call_in_sim` for anything else. None of this is published on a ROS topic a policy sees.

Pace: franky-sim's own loop sleeps 1 ms after each step and so runs at ~0.9x real time; here the
loop keeps a fixed 1 ms schedule and catches up after a slow step (up to ``MAX_LAG_S``), so
simulated time follows the wall clock when the CPU allows. ``realtime=False`` steps as fast as
possible.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import mujoco
import numpy as np

from sdm_controller.sim.camera import StateSnapshot
from sdm_controller.sim.franka_scene import HOME_HAND_WIDTH, HOME_Q, SceneIndex, make_simulator
from sdm_controller.sim.franka_task import ReachTask, TaskConfig, TaskState

T = TypeVar("T")
STEP_S = 0.001  # franky-sim's MuJoCo timestep and control period
SETTLE_S = 0.1  # after stopping a client's motion, time for its last packet to arrive (loopback)
MAX_LAG_S = 0.05  # behind the 1 ms schedule by more than this: drop the backlog instead of racing


@dataclass(frozen=True)
class SimConfig:
    hostname: str = "127.0.0.2"  # loopback address the libfranka server binds to
    home_q: tuple[float, ...] = HOME_Q
    hand_width: float = HOME_HAND_WIDTH
    realtime: bool = True
    task: TaskConfig = field(default_factory=TaskConfig)


@dataclass(frozen=True)
class ResetResult:
    object_position: tuple[float, float, float]
    episode: int
    preempted_motion: bool  # a motion of the connected client was running and was stopped


@dataclass(frozen=True)
class PaceReport:
    real_time_factor: float  # simulated seconds per wall second since the previous report
    steps_per_s: float


class FrankaSim:
    """The simulated robot, served over the libfranka protocol on ``config.hostname``."""

    def __init__(self, config: SimConfig | None = None, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.config = config or SimConfig()
        self.clock_ns = clock_ns
        self.sim, self.robot = make_simulator(self.config.home_q, self.config.hand_width)
        self.server = None
        self.model: mujoco.MjModel | None = None
        self.index: SceneIndex | None = None
        self.task: ReachTask | None = None
        self.task_state: TaskState | None = None
        self.error: BaseException | None = None  # what stopped the simulation thread, if anything
        self.steps = 0
        self._calls: deque[tuple[Callable[[], Any], concurrent.futures.Future]] = deque()
        self._changes: deque[tuple[bool, float]] = deque(maxlen=1000)
        self._running = False
        self._thread: threading.Thread | None = None
        self._pace_mark: tuple[float, float, int] | None = None  # (wall, sim time, steps)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Bind the server (``OSError`` if the address is taken), build the model, start stepping."""
        from franky_sim import SimulationServer

        if self.server is not None or self.sim.is_started:
            raise RuntimeError("FrankaSim.start: already started (make a new FrankaSim to start again)")
        self.server = SimulationServer(self.sim, hostname_candidates=[self.config.hostname])
        try:
            self.server.init()  # binds, then compiles the model (sim.start)
        except OSError as exc:
            self.server = None
            raise OSError(
                f"cannot serve the simulated robot on {self.config.hostname}: port 1337 (or the "
                f"gripper's) is taken there, or the address is not a local one ({exc})"
            ) from exc
        try:
            self.model = self.sim.model
            self.index = SceneIndex.from_model(self.model)
            self.task = ReachTask(self.model, self.config.task, self.index)
            self.task.reset(self.sim.data, self.config.home_q, self.config.hand_width)
            self.task.update(self.sim.data)
            self.task_state = self.task.state(self.sim.data)
            self.sim.register_post_step_callback(self._after_step)
            self._pace_mark = (time.monotonic(), float(self.sim.data.time), 0)
            self._running = True
            self._thread = threading.Thread(target=self._loop, name="franky-sim", daemon=True)
            self._thread.start()
        except BaseException:
            self.stop()
            raise

    @property
    def hostname(self) -> str:
        return self.robot.hostname

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop stepping, drop client connections and free the address (idempotent)."""
        self._running = False
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        if self.server is not None:
            self.server.cleanup()  # closes the listening sockets (robot and gripper)
            for robot_server in self.server.robot_servers:
                robot_server.reset_state()  # and the connection of a client, so it sees the robot go away
                if robot_server.gripper_server is not None:
                    robot_server.gripper_server.reset_state()
            self.server = None
        while self._calls:
            _, future = self._calls.popleft()
            future.cancel()

    def __enter__(self) -> FrankaSim:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- simulation thread ------------------------------------------------------------------
    def _loop(self) -> None:
        realtime = self.config.realtime
        next_step = time.perf_counter()
        try:
            while self._running:
                self.server.run_once(realtime=False)
                if not realtime:
                    continue
                next_step += STEP_S
                delay = next_step - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -MAX_LAG_S:
                    next_step = time.perf_counter()
        except BaseException as exc:  # noqa: BLE001 - reported through .error and the diagnostics
            self.error = exc
            self._running = False

    def _after_step(self, sim: Any) -> None:
        data = sim.data
        self.steps += 1
        before = self.task.success
        if self.task.update(data) != before:
            self._changes.append((self.task.success, float(data.time)))
        if self.steps % 10 == 0 or self.task.success != before:
            self.task_state = self.task.state(data)
        while self._calls:
            fn, future = self._calls.popleft()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)

    def call_in_sim(self, fn: Callable[[], T], timeout_s: float = 2.0) -> T:
        """Run ``fn()`` in the simulation thread between two steps and return its result.

        Raises ``TimeoutError`` when the simulation is not stepping.
        """
        if not self.running:
            raise TimeoutError("the simulation is not running" + (f": {self.error}" if self.error else ""))
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.append((fn, future))
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise TimeoutError(f"the simulation did not step within {timeout_s} s") from exc

    # -- requests from other threads --------------------------------------------------------
    def snapshot(self, timeout_s: float = 0.5) -> StateSnapshot | None:
        """Joint positions between two steps, stamped with ``clock_ns`` at the copy; None if not stepping."""
        data = self.sim.data

        def copy() -> StateSnapshot:
            return StateSnapshot(qpos=data.qpos.copy(), sim_time=float(data.time), stamp_ns=self.clock_ns())

        try:
            return self.call_in_sim(copy, timeout_s)
        except TimeoutError:
            return None

    def reset_task(self, object_position: Sequence[float] | None = None, timeout_s: float = 2.0) -> ResetResult:
        """New episode: stop a running client motion, arm home, cube at random (or ``object_position``).

        A running motion is stopped as a real robot's stop would: the client's motion ends with
        an error (franky raises ``ControlException: ... preempted``) and its next motion starts
        from home. The client answers the stop with a last "motion finished" packet, which makes
        franky-sim hold the pose it had then; the reset waits ``SETTLE_S`` for that packet
        before it moves the arm, so the hold is the home pose.
        """
        preempted = self.call_in_sim(self._stop_client_motion, timeout_s)
        if preempted:
            time.sleep(SETTLE_S)
        result = self.call_in_sim(lambda: self._reset(object_position), timeout_s)
        return replace(result, preempted_motion=result.preempted_motion or preempted)

    def _stop_client_motion(self) -> bool:
        robot_server = self.robot.server
        if robot_server.current_motion_id == 0:
            return False
        robot_server.stop_motion()  # replies "preempted" to the client's Move command
        return True

    def _reset(self, object_position: Sequence[float] | None) -> ResetResult:
        before = self.task.success
        preempted = self._stop_client_motion()  # one started since the first stop
        position = self.task.reset(
            self.sim.data, self.config.home_q, self.config.hand_width, object_position=object_position
        )
        # franky-sim's idle controller holds the pose saved when it went idle; this hook (the one
        # its own reconnect uses) makes it hold the new home pose. The client stays connected.
        self.robot.server._reset_state()
        self.robot.set_hand_goal(self.config.hand_width, 0.05, 70.0)
        if self.task.update(self.sim.data) != before:
            self._changes.append((self.task.success, float(self.sim.data.time)))
        self.task_state = self.task.state(self.sim.data)
        return ResetResult(tuple(float(v) for v in position), self.task.episode, preempted)

    def success_changes(self) -> list[tuple[bool, float]]:
        """Every (success, sim time) change since the last call, oldest first."""
        changes = []
        while self._changes:
            changes.append(self._changes.popleft())
        return changes

    @property
    def client_connected(self) -> bool:
        return self.robot.server is not None and self.robot.server.udp_connected

    @property
    def motion_running(self) -> bool:
        return self.robot.server is not None and self.robot.server.current_motion_id != 0

    def pace(self) -> PaceReport:
        """Real-time factor and step rate since the previous call (the first call: since start)."""
        now = time.monotonic()
        sim_time = float(self.sim.data.time) if self.sim.data is not None else 0.0
        mark, self._pace_mark = self._pace_mark, (now, sim_time, self.steps)
        if mark is None or now <= mark[0]:
            return PaceReport(float("nan"), float("nan"))
        wall = now - mark[0]
        return PaceReport((sim_time - mark[1]) / wall, (self.steps - mark[2]) / wall)

    def joint_positions(self) -> np.ndarray:
        """Arm joint positions now (read between steps)."""
        return self.call_in_sim(lambda: self.sim.data.qpos[self.index.arm_qpos].copy())
