"""Camera images of a running simulation without racing its physics thread.

MuJoCo has no lock between ``mj_step`` (franky-sim's 1 kHz thread) and rendering, so a frame
drawn from the live ``MjData`` can show half a step. Here the simulation thread copies ``qpos``
into a :class:`StateSnapshot` between two steps (``FrankaSim.snapshot``), and the renderer draws
that copy with its own ``MjData``. The snapshot carries the clock reading taken at the copy: the
instant the picture shows, which is what the image's stamp must say.

An OpenGL context belongs to the thread that made it current, so :class:`CameraLoop` creates
its :class:`SceneCamera` in its own thread and renders only there.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from sdm_controller.common.stats import LatencyWindow, RateMeter
from sdm_controller.sim.franka_scene import render_options


@dataclass(frozen=True, eq=False)
class StateSnapshot:
    """The simulated state at one instant."""

    qpos: np.ndarray
    sim_time: float
    stamp_ns: int  # clock reading when qpos was copied


@dataclass(frozen=True, eq=False)
class Frame:
    image: np.ndarray  # (height, width, 3) uint8 RGB, row 0 at the top
    stamp_ns: int  # = the snapshot's stamp
    sim_time: float
    render_ms: float


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole model of a MuJoCo camera (square pixels; MuJoCo's fovy is vertical)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fovy(cls, fovy_deg: float, width: int, height: int) -> CameraIntrinsics:
        f = 0.5 * height / math.tan(math.radians(fovy_deg) / 2)
        return cls(width, height, f, f, width / 2, height / 2)


class SceneCamera:
    """Renders one fixed camera of ``model`` from joint positions. Use from a single thread."""

    def __init__(self, model: mujoco.MjModel, camera: str, width: int, height: int) -> None:
        self.camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self.camera_id < 0:
            names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
            raise ValueError(f"the scene has no camera '{camera}' (it has: {', '.join(names) or 'none'})")
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            model.vis.global_.offwidth = max(width, model.vis.global_.offwidth)
            model.vis.global_.offheight = max(height, model.vis.global_.offheight)
        self.model = model
        self.camera = camera
        self.intrinsics = CameraIntrinsics.from_fovy(float(model.cam_fovy[self.camera_id]), width, height)
        self._data = mujoco.MjData(model)
        self._option = render_options()
        self._renderer = mujoco.Renderer(model, height, width)

    def render(self, qpos: np.ndarray) -> np.ndarray:
        data = self._data
        data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, data)
        mujoco.mj_camlight(self.model, data)
        self._renderer.update_scene(data, camera=self.camera_id, scene_option=self._option)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False
        return self._renderer.render()

    def close(self) -> None:
        self._renderer.close()


class CameraLoop:
    """A thread that snapshots, renders and hands over a :class:`Frame` ``rate_hz`` times a second.

    ``snapshot(timeout_s)`` returns a :class:`StateSnapshot` or None (simulation not stepping);
    ``on_frame(frame)`` is called in this thread. Ticks follow a fixed wall-clock schedule; a
    tick that finds the previous one still running is skipped and counted in ``missed``.
    """

    def __init__(
        self,
        make_camera: Callable[[], SceneCamera],
        snapshot: Callable[[float], StateSnapshot | None],
        on_frame: Callable[[Frame], None],
        rate_hz: float,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        if not rate_hz > 0:
            raise ValueError(f"camera rate must be > 0 Hz, got {rate_hz}")
        self.period_s = 1.0 / rate_hz
        self._make_camera = make_camera
        self._snapshot = snapshot
        self._on_frame = on_frame
        self._clock_ns = clock_ns
        self.render_ms = LatencyWindow()
        self.rate = RateMeter()
        self.frames = 0
        self.missed = 0
        self.error: BaseException | None = None
        self.intrinsics: CameraIntrinsics | None = None  # set once the camera exists
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="camera", daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the thread; raises if the renderer cannot be created (e.g. no OpenGL)."""
        self._thread.start()
        self._ready.wait(timeout_s)
        if self.error is not None:
            raise RuntimeError(f"camera renderer failed to start: {self.error}") from self.error

    def _run(self) -> None:
        try:
            camera = self._make_camera()
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self.error = exc
            self._ready.set()
            return
        self.intrinsics = camera.intrinsics
        self._ready.set()
        try:
            deadline = time.monotonic()
            while not self._stop.is_set():
                deadline += self.period_s
                delay = deadline - time.monotonic()
                if delay < 0:  # late by more than a period: skip ticks rather than burst
                    skipped = int(-delay / self.period_s) + 1
                    self.missed += skipped
                    deadline += skipped * self.period_s
                    delay = deadline - time.monotonic()
                if self._stop.wait(max(delay, 0.0)):
                    break
                self._tick(camera)
        except BaseException as exc:  # noqa: BLE001 - kept for diagnostics; the thread ends
            self.error = exc
        finally:
            camera.close()

    def _tick(self, camera: SceneCamera) -> None:
        snap = self._snapshot(max(self.period_s, 0.2))
        if snap is None:
            self.missed += 1
            return
        start = time.perf_counter()
        image = camera.render(snap.qpos)
        render_ms = (time.perf_counter() - start) * 1e3
        self.render_ms.add(render_ms)
        self.frames += 1
        self.rate.add(self._clock_ns())
        self._on_frame(Frame(image=image, stamp_ns=snap.stamp_ns, sim_time=snap.sim_time, render_ms=render_ms))

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
