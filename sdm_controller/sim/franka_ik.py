"""Inverse kinematics of the FR3's TCP in the work-cell model: damped least squares, hand down.

The scripted expert (``franka_expert``) and tests need joint positions that put the TCP at a
point with the hand pointing straight down, as it does at home. This works on a private
``MjData`` of the scene's model, so it never disturbs a running simulation.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np

from sdm_controller.errors import SdmError
from sdm_controller.sim.franka_scene import HOME_Q, SceneIndex

LIMIT_MARGIN_RAD = 0.05  # stay this far inside the joint ranges
DAMPING = 1e-4
MAX_STEP_RAD = 0.2  # per iteration, so a far target does not jump across a singularity


class IKError(SdmError):
    """The TCP target is out of reach (the message says how far the best solution stayed)."""


class TcpKinematics:
    """Forward and inverse kinematics of the TCP site for the arm joints fr3_joint1..7."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.index = SceneIndex.from_model(model)
        joint_ids = [model.dof_jntid[d] for d in self.index.arm_dof]
        low, high = model.jnt_range[joint_ids].T
        self.low, self.high = low + LIMIT_MARGIN_RAD, high - LIMIT_MARGIN_RAD
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))
        self._set(HOME_Q)
        self.down = self.data.site_xmat[self.index.tcp_site].reshape(3, 3).copy()  # home orientation

    def _set(self, q: Sequence[float]) -> None:
        self.data.qpos[self.index.arm_qpos] = np.asarray(q, float)
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)  # mj_jacSite needs the com-based axes

    def tcp(self, q: Sequence[float]) -> np.ndarray:
        """TCP position (base frame, m) at arm joints ``q``."""
        self._set(q)
        return self.data.site_xpos[self.index.tcp_site].copy()

    def solve(
        self, target: Sequence[float], seed: Sequence[float], tolerance_m: float = 1e-4, iterations: int = 200
    ) -> np.ndarray:
        """Arm joints near ``seed`` that put the TCP at ``target`` with the hand down; raises :class:`IKError`."""
        q = np.clip(np.asarray(seed, float), self.low, self.high)
        target = np.asarray(target, float)
        site = self.index.tcp_site
        error_pos = np.full(3, np.inf)
        for _ in range(iterations):
            self._set(q)
            rot = self.data.site_xmat[site].reshape(3, 3)
            error_pos = target - self.data.site_xpos[site]
            error_rot = 0.5 * sum(np.cross(rot[:, i], self.down[:, i]) for i in range(3))
            if np.linalg.norm(error_pos) < tolerance_m and np.linalg.norm(error_rot) < 1e-3:
                return q
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, site)
            jac = np.vstack([self._jacp, self._jacr])[:, self.index.arm_dof]
            error = np.concatenate([error_pos, error_rot])
            step = jac.T @ np.linalg.solve(jac @ jac.T + DAMPING * np.eye(6), error)
            q = np.clip(q + np.clip(step, -MAX_STEP_RAD, MAX_STEP_RAD), self.low, self.high)
        if np.linalg.norm(error_pos) > 10 * tolerance_m:
            raise IKError(f"no joint solution puts the TCP at {target.round(3).tolist()}: "
                          f"the best stays {np.linalg.norm(error_pos) * 1000:.1f} mm away")
        return q
