"""The scripted reach expert and the TCP inverse kinematics, on the work-cell model (no franky, no ROS)."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from sdm_controller.sim.franka_expert import ExpertConfig, ReachExpert
from sdm_controller.sim.franka_ik import IKError, TcpKinematics
from sdm_controller.sim.franka_scene import CUBE_HALF_SIZE, HOME_Q, work_cell_model
from sdm_controller.sim.franka_task import ReachTask, TaskConfig

PERIOD_S = 0.1


@pytest.fixture(scope="module")
def scene():
    model = work_cell_model()
    return model, TcpKinematics(model)


def test_ik_round_trip_and_unreachable_target(scene):
    _, kinematics = scene
    target = np.array([0.5, 0.1, 0.2])
    q = kinematics.solve(target, HOME_Q)
    assert np.linalg.norm(kinematics.tcp(q) - target) < 1e-3
    assert np.all(q >= kinematics.low) and np.all(q <= kinematics.high)
    with pytest.raises(IKError, match="mm away"):
        kinematics.solve([1.5, 0.0, 0.3], HOME_Q)


def test_expert_touches_every_cube_without_sweeping_into_it(scene):
    """Executing 8 of every 16 targets (as the policy node does) brings the TCP onto the cube's
    top within the task tolerance; the hand only comes below the approach height over the cube."""
    model, kinematics = scene
    task = ReachTask(model, TaskConfig(seed=7))
    data = mujoco.MjData(model)
    config = ExpertConfig()
    expert = ReachExpert(kinematics, config)
    for _ in range(6):
        task.reset(data)
        goal = task.goal_position(data)
        q, previous = np.array(HOME_Q), kinematics.tcp(HOME_Q)
        for _ in range(12):
            chunk = expert.chunk(q, goal, 16, PERIOD_S)
            assert chunk.shape == (16, 8) and np.all(chunk[:, 7] == config.finger_m)
            for row in chunk[:8]:
                q = row[:7]
                tcp = kinematics.tcp(q)
                assert np.linalg.norm(tcp - previous) <= config.speed * PERIOD_S + 2e-3
                if np.linalg.norm(tcp[:2] - goal[:2]) > CUBE_HALF_SIZE * 1.5:
                    assert tcp[2] > goal[2] + config.approach_m - 0.01
                previous = tcp
        assert np.linalg.norm(kinematics.tcp(q) - goal) <= task.config.tolerance_m
