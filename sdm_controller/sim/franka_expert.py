"""Scripted expert of the reach-and-touch task: closed-loop joint-target chunks from the TCP.

The expert acts like the policy: from the measured arm joints and the cube's top-face centre
(which it is told, the policy must see it), it returns the next ``horizon`` joint targets one
control period apart. The TCP moves at most ``speed`` m/s, first to a point ``approach_m`` above
the goal, then straight down to ``touch_m`` above it, and stays there. Being re-planned from the
measured state every chunk, it absorbs tracking lag; being a function of the state only (no
phase memory), a demonstration never depends on when the recording started.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sdm_controller.sim.franka_ik import TcpKinematics


@dataclass(frozen=True)
class ExpertConfig:
    speed: float = 0.2  # m/s of the TCP
    approach_m: float = 0.08  # height above the goal from which the hand descends vertically
    touch_m: float = 0.005  # final height of the TCP above the cube's top face
    align_m: float = 0.01  # horizontal distance below which the hand may descend
    finger_m: float = 0.04  # commanded finger opening (one finger: gripper width / 2), open


class ReachExpert:
    def __init__(self, kinematics: TcpKinematics, config: ExpertConfig | None = None) -> None:
        self.kinematics = kinematics
        self.config = config or ExpertConfig()

    def next_point(self, tcp: np.ndarray, goal: np.ndarray, step_m: float) -> np.ndarray:
        """Where the TCP should be one period after ``tcp`` (a step of at most ``step_m``)."""
        c = self.config
        approach = goal + np.array([0.0, 0.0, c.approach_m])
        touch = goal + np.array([0.0, 0.0, c.touch_m])
        aligned = np.linalg.norm(tcp[:2] - goal[:2]) <= c.align_m
        low = tcp[2] < approach[2] - 1e-3
        if aligned:
            waypoint = touch
        elif low:  # beside the cube and below the approach height: rise first, never sweep into it
            waypoint = np.array([tcp[0], tcp[1], approach[2]])
        else:
            waypoint = approach
        delta = waypoint - tcp
        distance = float(np.linalg.norm(delta))
        return waypoint if distance <= step_m else tcp + delta * (step_m / distance)

    def chunk(self, q: Sequence[float], goal: Sequence[float], horizon: int, period_s: float) -> np.ndarray:
        """(horizon, 8) targets: arm joints fr3_joint1..7 and the finger opening, ``period_s`` apart."""
        goal = np.asarray(goal, float)
        q = np.asarray(q, float)
        tcp = self.kinematics.tcp(q)
        step_m = self.config.speed * period_s
        rows = []
        for _ in range(horizon):
            tcp = self.next_point(tcp, goal, step_m)
            q = self.kinematics.solve(tcp, q)
            rows.append([*q, self.config.finger_m])
        return np.array(rows)
