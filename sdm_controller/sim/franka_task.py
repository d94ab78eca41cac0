"""Reach-and-touch task in the FR3 work cell: a cube at a random place, touched with the TCP.

Each episode (:meth:`ReachTask.reset`) puts the arm at its home pose and the cube (see
:mod:`sdm_controller.sim.franka_scene`) uniformly at random in a rectangle of the table in front
of the robot, with a random yaw. Success is the TCP (the site between the fingertips) within
``tolerance_m`` of the centre of the cube's top face, held for ``hold_s`` of simulated time.

Everything here is a pure function of an ``MjModel`` / ``MjData`` (no franky, no ROS, no
threads): the bridge calls it from the simulation thread, tests and the scripted expert call it
on their own ``MjData``. The cube's position is deliberately not part of the robot's joint state:
a policy has to find it in the camera image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from sdm_controller.errors import ConfigError
from sdm_controller.sim.franka_scene import (
    CUBE_HALF_SIZE,
    HOME_HAND_WIDTH,
    HOME_Q,
    TABLE_CENTER_X,
    TABLE_HALF_SIZE,
    TABLE_TOP_Z,
    SceneIndex,
)

REACH_LIMIT_M = 0.8  # FR3 reach is 0.855 m; keep the cube where the hand can get on top of it
BASE_CLEARANCE_M = 0.25  # and away from the robot's base


@dataclass(frozen=True)
class TaskConfig:
    """Where the cube may appear and what counts as touching it."""

    region_x: tuple[float, float] = (0.4, 0.6)  # cube centre, metres in the robot base frame
    region_y: tuple[float, float] = (-0.2, 0.2)
    tolerance_m: float = 0.03  # TCP to the centre of the cube's top face
    hold_s: float = 0.2  # simulated seconds the TCP must stay within tolerance
    seed: int = 0  # of the placement generator; the same seed gives the same sequence of episodes

    def __post_init__(self) -> None:
        table_x = (TABLE_CENTER_X - TABLE_HALF_SIZE[0], TABLE_CENTER_X + TABLE_HALF_SIZE[0])
        table_y = (-TABLE_HALF_SIZE[1], TABLE_HALF_SIZE[1])
        for name, (low, high), (table_low, table_high) in (
            ("region_x", self.region_x, table_x),
            ("region_y", self.region_y, table_y),
        ):
            if not (math.isfinite(low) and math.isfinite(high) and low <= high):
                raise ConfigError(f"task {name} must be [low, high] with low <= high, got [{low}, {high}]")
            if low - CUBE_HALF_SIZE < table_low or high + CUBE_HALF_SIZE > table_high:
                raise ConfigError(
                    f"task {name} [{low}, {high}] puts the cube off the table "
                    f"(the table spans [{table_low:g}, {table_high:g}])"
                )
        corners = np.array([(x, y) for x in self.region_x for y in self.region_y])
        nearest = np.clip((0.0, 0.0), (self.region_x[0], self.region_y[0]), (self.region_x[1], self.region_y[1]))
        if np.linalg.norm(nearest) < BASE_CLEARANCE_M:
            raise ConfigError(
                f"task region x {self.region_x}, y {self.region_y} comes closer than "
                f"{BASE_CLEARANCE_M} m to the robot's base (the cube would be under the robot)"
            )
        if np.max(np.linalg.norm(corners, axis=1)) > REACH_LIMIT_M:
            raise ConfigError(
                f"task region x {self.region_x}, y {self.region_y} has corners more than "
                f"{REACH_LIMIT_M} m from the robot's base: the hand cannot get on top of the cube"
            )
        if not (self.tolerance_m > 0 and math.isfinite(self.tolerance_m)):
            raise ConfigError(f"task tolerance_m must be > 0, got {self.tolerance_m}")
        if not (self.hold_s >= 0 and math.isfinite(self.hold_s)):
            raise ConfigError(f"task hold_s must be >= 0, got {self.hold_s}")


@dataclass(frozen=True)
class TaskState:
    """What the task knows after a simulation step (positions in the robot base = world frame)."""

    sim_time: float
    object_position: tuple[float, float, float]  # cube centre
    goal_position: tuple[float, float, float]  # centre of the cube's top face
    tcp_position: tuple[float, float, float]
    distance: float  # TCP to goal
    min_distance: float  # closest TCP to goal at any simulation step since the last reset
    success: bool  # within tolerance for hold_s, now
    episode_success: bool  # success at some time since the last reset
    episode: int  # number of resets so far


class ReachTask:
    """Placement, reset and success check of the reach-and-touch task on one model."""

    def __init__(
        self, model: mujoco.MjModel, config: TaskConfig | None = None, index: SceneIndex | None = None
    ) -> None:
        self.model = model
        self.config = config or TaskConfig()
        self.index = index or SceneIndex.from_model(model)
        self.rng = np.random.default_rng(self.config.seed)
        self.episode = 0
        self._inside_since: float | None = None
        self._success = False
        self._episode_success = False
        self._min_distance = math.inf

    # -- episode ------------------------------------------------------------------------------
    def sample_object_position(self) -> np.ndarray:
        (x0, x1), (y0, y1) = self.config.region_x, self.config.region_y
        return np.array([self.rng.uniform(x0, x1), self.rng.uniform(y0, y1), TABLE_TOP_Z + CUBE_HALF_SIZE])

    def place_object(
        self, data: mujoco.MjData, position: Sequence[float] | None = None, yaw: float | None = None
    ) -> np.ndarray:
        """Put the cube at ``position`` (default: at random in the region) at rest; returns its centre."""
        position = self.sample_object_position() if position is None else np.asarray(position, float)
        yaw = self.rng.uniform(-math.pi / 4, math.pi / 4) if yaw is None else float(yaw)
        q = self.index.cube_qpos
        data.qpos[q : q + 3] = position
        data.qpos[q + 3 : q + 7] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        d = self.index.cube_dof
        data.qvel[d : d + 6] = 0.0
        return position.copy()

    def set_arm(self, data: mujoco.MjData, q: Sequence[float], hand_width: float = HOME_HAND_WIDTH) -> None:
        """Arm joints to ``q``, fingers to ``hand_width`` (total opening), all at rest."""
        data.qpos[self.index.arm_qpos] = np.asarray(q, float)
        data.qpos[self.index.finger_qpos] = hand_width / 2
        data.qvel[self.index.arm_dof] = 0.0
        data.qvel[self.index.finger_dof] = 0.0
        data.qfrc_applied[self.index.arm_dof] = 0.0
        data.qfrc_applied[self.index.finger_dof] = 0.0

    def reset(
        self,
        data: mujoco.MjData,
        home_q: Sequence[float] = HOME_Q,
        hand_width: float = HOME_HAND_WIDTH,
        object_position: Sequence[float] | None = None,
    ) -> np.ndarray:
        """A new episode: arm home, cube placed (at random unless given); returns the cube centre."""
        self.set_arm(data, home_q, hand_width)
        position = self.place_object(data, object_position)
        data.qacc_warmstart[:] = 0.0
        mujoco.mj_forward(self.model, data)
        self.episode += 1
        self._inside_since = None
        self._success = False
        self._episode_success = False
        self._min_distance = self.distance(data)
        return position

    # -- what an expert and the success check read ----------------------------------------
    def object_position(self, data: mujoco.MjData) -> np.ndarray:
        return data.xpos[self.index.cube_body].copy()

    def goal_position(self, data: mujoco.MjData) -> np.ndarray:
        """Centre of the cube's top face (the cube's centre + half its size, straight up)."""
        goal = data.xpos[self.index.cube_body].copy()
        goal[2] += CUBE_HALF_SIZE
        return goal

    def tcp_position(self, data: mujoco.MjData) -> np.ndarray:
        return data.site_xpos[self.index.tcp_site].copy()

    def distance(self, data: mujoco.MjData) -> float:
        return float(np.linalg.norm(self.tcp_position(data) - self.goal_position(data)))

    # -- success --------------------------------------------------------------------------
    def update(self, data: mujoco.MjData) -> bool:
        """Advance the success check to ``data.time`` (call after each step); returns success now.

        Reads positions from ``data.xpos`` / ``site_xpos``, i.e. as of the last kinematics pass.
        """
        distance = self.distance(data)
        self._min_distance = min(self._min_distance, distance)
        inside = distance <= self.config.tolerance_m
        t = float(data.time)
        if not inside:
            self._inside_since = None
        elif self._inside_since is None:
            self._inside_since = t
        self._success = inside and t - self._inside_since >= self.config.hold_s - 1e-9
        self._episode_success = self._episode_success or self._success
        return self._success

    @property
    def success(self) -> bool:
        return self._success

    @property
    def episode_success(self) -> bool:
        return self._episode_success

    def state(self, data: mujoco.MjData) -> TaskState:
        tcp, goal = self.tcp_position(data), self.goal_position(data)
        return TaskState(
            sim_time=float(data.time),
            object_position=tuple(float(v) for v in self.object_position(data)),
            goal_position=tuple(float(v) for v in goal),
            tcp_position=tuple(float(v) for v in tcp),
            distance=float(np.linalg.norm(tcp - goal)),
            min_distance=float(self._min_distance),
            success=self._success,
            episode_success=self._episode_success,
            episode=self.episode,
        )
