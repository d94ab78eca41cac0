"""The driver's control thread: read the robot, step the core, stream the command, report state.

One plain thread at ``control_rate_hz`` (franky interpolates each command at 1 kHz). It also
owns the connection: when the link goes down it reports it, forgets the running chunk
(:meth:`DriverCore.reset`) and reconnects every ``reconnect_period_s``; after a reconnect the
arm stays at rest until a chunk stamped after the reconnect arrives. A robot fault (a refused
or aborted motion) stops streaming until :meth:`ControlLoop.recover` succeeds. Error recovery
runs on this thread too, between two periods, so it never races a command.

Joint states keep flowing while the robot is faulted or recovering: every period reads franky's
state and hands it to ``on_sample`` *before* anything that can fail or wait (the command, the
gripper), so a refused motion costs no sample. While the link is down nothing is published (no
stale values); :attr:`ControlLoop.publishing` says which, for the diagnostics.

On connect the command limits are capped at franky's own joint limits (``LIMIT_MARGIN`` of what
the connected Robot reports): franky refuses, and faults on, any waypoint above them.

:meth:`ControlLoop.stop` brakes, ends the thread and joins it, then closes the link (franky's
objects are released on the stopping thread once nothing else uses them).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sdm_controller.driver.core import Command, DriverCore
from sdm_controller.driver.franky_link import LIMIT_MARGIN, FrankyLink, LinkDown, RobotFault

GRIPPER_READ_EVERY = 4  # control periods between two gripper width reads
CLOCK_CHECK_S = 1.0  # how often the robot's clock is compared with the wall clock


@dataclass(frozen=True, eq=False)
class RobotSample:
    """What the loop read in one period (stamped with the clock at the read)."""

    stamp_ns: int
    q: np.ndarray
    dq: np.ndarray
    gripper_width: float | None


class ControlLoop:
    def __init__(
        self,
        link: FrankyLink,
        core: DriverCore,
        clock_ns: Callable[[], int],
        on_sample: Callable[[RobotSample, Command], None] | None = None,
        log: Callable[[str, str], None] | None = None,
    ) -> None:
        self.link, self.core, self.clock_ns = link, core, clock_ns
        self.on_sample = on_sample or (lambda sample, command: None)
        self.log = log or (lambda level, message: None)
        self.connected = False
        self.connection_message = f"connecting to '{link.host}'"
        self.reconnects = 0
        self.fault = ""
        self.periods_s: deque[float] = deque(maxlen=2000)
        #: robot seconds per wall second over the last CLOCK_CHECK_S (1.0 for a real robot; below 1 when
        #: franky-sim cannot keep real time, and then the arm lags wall-clock-timed chunks)
        self.robot_clock_rate: float | None = None
        self._clock_mark: tuple[float, float] | None = None
        self._gripper_width: float | None = None
        self._gripper_commanded: float | None = None
        self._stop = threading.Event()
        self._recover_request: list | None = None  # [done Event, result]
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="franka-control", daemon=True)

    # -- public -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    @property
    def publishing(self) -> bool:
        """Whether robot states are being read and handed on (False while the link is down)."""
        return self.connected and self._thread.is_alive() and not self._stop.is_set()

    def stop(self, brake_timeout: float = 1.5, join_timeout: float = 10.0) -> bool:
        """Brake to rest (at most ``brake_timeout``), end the thread and join it, then close the link.

        Returns False when the thread did not end in ``join_timeout`` (blocked in franky): the link is
        then left alone, since releasing franky objects under a thread that uses them can crash."""
        if self._thread.is_alive() and self.connected and not self.fault:
            self.core.hold("driver shutting down")
            deadline = time.monotonic() + brake_timeout
            while not self.core.at_rest and self._thread.is_alive() and time.monotonic() < deadline:
                time.sleep(0.005)
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(join_timeout)
            if self._thread.is_alive():
                return False
        self.link.close()
        self.connected = False
        return True

    def connect_once(self) -> None:
        """Connect before the thread starts (raises LinkDown: the node exits when there is no robot)."""
        self.link.connect()
        self._connected(first=True)

    def recover(self, timeout: float = 10.0) -> tuple[bool, str]:
        """Run franky's error recovery on the control thread; the arm then waits for a fresh chunk."""
        done = threading.Event()
        request = [done, (False, "the control loop did not answer in time")]
        with self._lock:
            self._recover_request = request
        done.wait(timeout)
        return request[1]

    def period_stats(self) -> tuple[float, float]:
        """Median and maximum of recent control periods (s)."""
        periods = list(self.periods_s)
        return (float(np.median(periods)), float(np.max(periods))) if periods else (0.0, 0.0)

    # -- thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        period = 1.0 / self.core.settings.control_rate_hz
        deadline = time.perf_counter()
        last = None
        count = 0
        while not self._stop.is_set():
            if not self.link.connected:
                self._reconnect()
                deadline = time.perf_counter()
                continue
            self._serve_recover()
            try:
                self._period(count)
            except LinkDown as exc:
                self._lost(str(exc))
                continue
            except RobotFault as exc:
                self._faulted(str(exc))
            except Exception as exc:  # noqa: BLE001 - the thread that streams to the robot must not die
                self._internal_error(exc)
            count += 1
            now = time.perf_counter()
            if last is not None:
                self.periods_s.append(now - last)
            last = now
            deadline += period
            if deadline < now - period:  # far behind (stalled): do not try to catch up
                deadline = now
            time.sleep(max(0.0, deadline - now))

    def _period(self, count: int) -> None:
        q, dq = self.link.read()
        stamp = self.clock_ns()
        command = self.core.step(stamp, q, dq)
        width_read = self._gripper_width is None
        if width_read:  # first period on this connection: publish the fingers from the start
            self._gripper_width = self.link.gripper_width()
        # the state goes out first: nothing below (a refused command, the gripper) may cost a sample
        self.on_sample(RobotSample(stamp, q, dq, self._gripper_width), command)
        if command.stream and not self.fault:
            self.link.send_velocity(command.velocity)
        if count % GRIPPER_READ_EVERY == 0 and not width_read:
            self._gripper_width = self.link.gripper_width()
        if command.finger is not None and not self.fault:
            width = float(np.clip(2.0 * command.finger, 0.0, 0.08))
            deadband = self.core.settings.gripper_deadband_m
            changed = self._gripper_commanded is None or abs(width - self._gripper_commanded) > deadband
            if changed and not self.link.gripper_busy():
                self.link.move_gripper(width, self.core.settings.gripper_speed)
                self._gripper_commanded = width
        self._check_clock()

    def _check_clock(self) -> None:
        wall = time.monotonic()
        if self._clock_mark is not None and wall - self._clock_mark[0] < CLOCK_CHECK_S:
            return
        robot = self.link.robot_time_s()
        if self._clock_mark is not None:
            self.robot_clock_rate = (robot - self._clock_mark[1]) / (wall - self._clock_mark[0])
        self._clock_mark = (wall, robot)

    def _serve_recover(self) -> None:
        with self._lock:
            request, self._recover_request = self._recover_request, None
        if request is None:
            return
        try:
            self.link.recover()
            self.fault = ""
            self.core.reset("recovered from errors", self.clock_ns(), release_stop=True)
            request[1] = (True, "recovered; the arm waits for a chunk stamped after now")
            self.log("info", "error recovery done; waiting for a fresh chunk")
        except (LinkDown, RobotFault) as exc:
            request[1] = (False, f"error recovery failed: {exc}")
            self.log("error", request[1][1])
        request[0].set()

    def _connected(self, first: bool = False) -> None:
        limits = self.link.franky_limits
        if limits is not None:  # before anything is commanded on this connection
            self.core.set_robot_limits(limits.velocity * LIMIT_MARGIN, limits.acceleration * LIMIT_MARGIN)
        self.connected = True
        self.fault = ""
        self._gripper_width = self._gripper_commanded = None
        self._clock_mark = self.robot_clock_rate = None
        self.core.reset("connected" if first else "reconnected", self.clock_ns())
        self.connection_message = f"connected to '{self.link.host}'"
        if self.link.gripper_error:
            self.log("warn", self.link.gripper_error)

    def _lost(self, message: str) -> None:
        self.link.disconnect()
        self.connected = False
        self.core.reset("connection lost", self.clock_ns())
        self.connection_message = f"connection to '{self.link.host}' lost: {message}"
        self.log("error", self.connection_message + "; reconnecting")

    def _faulted(self, message: str) -> None:
        if not self.fault:
            self.log("error", f"robot fault: {message}; call ~/recover")
        self.fault = message
        self.core.reset("robot fault", self.clock_ns())

    def _internal_error(self, exc: Exception) -> None:
        """A bug or an unexpected error: stop moving (franky ends the motion), report, keep running."""
        self.core.reset(f"internal error: {type(exc).__name__}: {exc}", self.clock_ns())
        with contextlib.suppress(Exception):  # logging must not take the loop down either
            self.log("error", f"control loop error (the arm stops): {type(exc).__name__}: {exc}")
        self._stop.wait(0.05)

    def _reconnect(self) -> None:
        try:
            self.link.connect()
        except LinkDown as exc:
            self.connection_message = f"disconnected from '{self.link.host}' ({exc}); retrying"
            self._stop.wait(self.core.settings.reconnect_period_s)
            self._serve_recover()
            return
        self.reconnects += 1
        self._connected()
        self.log("info", f"reconnected to '{self.link.host}'; the arm waits for a fresh chunk")
