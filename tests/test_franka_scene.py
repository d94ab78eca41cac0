"""The simulated work cell without ROS: scene, camera, task, and franky-sim serving it.

The scene tests compile the model with ``sim.start()`` (no sockets); the last test starts the
libfranka server on a loopback address of this file's own (127.0.0.2x: the bridge's tests use
127.0.0.21-24, the driver's 127.0.0.3x) and connects a real ``franky.Robot``.
"""

from __future__ import annotations

import time

import mujoco
import numpy as np
import pytest

from sdm_controller.errors import ConfigError
from sdm_controller.sim.camera import CameraIntrinsics, CameraLoop, SceneCamera
from sdm_controller.sim.franka_scene import (
    CAMERA,
    CUBE_HALF_SIZE,
    HOME_Q,
    TABLE_TOP_Z,
    SceneIndex,
    make_simulator,
)
from sdm_controller.sim.franka_task import ReachTask, TaskConfig

HOSTNAME = "127.0.0.25"


@pytest.fixture(scope="module")
def scene():
    """(simulator, franky-sim robot) with the model compiled, no server."""
    sim, robot = make_simulator()
    sim.start()
    return sim, robot


def red_centroid(image: np.ndarray) -> np.ndarray | None:
    """Mean (row, col) of the cube's pixels (strongly red), None when there are none."""
    r, g, b = (image[..., i].astype(int) for i in range(3))
    rows, cols = np.nonzero((r > 120) & (g < 60) & (b < 60))
    return np.array([rows.mean(), cols.mean()]) if rows.size else None


def test_scene_has_the_robot_cube_camera_and_tcp(scene):
    sim, robot = scene
    model, data = sim.model, mujoco.MjData(sim.model)
    index = SceneIndex.from_model(model)
    assert model.opt.timestep == 0.001
    assert model.vis.quality.shadowsize == 0 and model.vis.quality.offsamples == 0
    task = ReachTask(model, TaskConfig(), index)
    task.reset(data)
    np.testing.assert_allclose(data.qpos[index.arm_qpos], HOME_Q)
    # the TCP site is franky's TCP (libfranka's F_T_EE of the Franka hand) at any pose
    for q in (HOME_Q, (0.3, -0.2, 0.1, -1.9, 0.2, 1.8, 0.4)):
        task.set_arm(data, q)
        mujoco.mj_forward(model, data)
        np.testing.assert_allclose(task.tcp_position(data), robot.kinematics(np.array(q)).translation, atol=1e-6)
    # the cube falls onto the table and rests there
    task.reset(data, object_position=(0.5, 0.1, TABLE_TOP_Z + CUBE_HALF_SIZE + 0.02))
    for _ in range(500):
        mujoco.mj_step(model, data)
    position = task.object_position(data)
    assert abs(position[2] - (TABLE_TOP_Z + CUBE_HALF_SIZE)) < 0.003
    np.testing.assert_allclose(position[:2], (0.5, 0.1), atol=0.005)


def test_camera_renders_the_scene_quickly(scene):
    sim, _ = scene
    data = mujoco.MjData(sim.model)
    task = ReachTask(sim.model)
    task.reset(data, object_position=(0.5, 0.0, CUBE_HALF_SIZE))
    camera = SceneCamera(sim.model, CAMERA, 96, 96)
    try:
        image = camera.render(data.qpos)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert image.std() > 20  # table, arm and cube, not a blank frame
        assert red_centroid(image) is not None  # the cube is in view
        times = []
        for _ in range(20):
            start = time.perf_counter()
            camera.render(data.qpos)
            times.append(time.perf_counter() - start)
        # ~1-3 ms on a 2-core CPU with llvmpipe; 120 ms with franky-sim's default visual settings
        assert np.median(times) < 0.04, f"median render {np.median(times) * 1e3:.1f} ms"
        assert camera.intrinsics == CameraIntrinsics.from_fovy(sim.model.cam_fovy[camera.camera_id], 96, 96)
    finally:
        camera.close()
    wide = SceneCamera(sim.model, CAMERA, 64, 48)
    try:
        assert wide.render(data.qpos).shape == (48, 64, 3)
    finally:
        wide.close()
    with pytest.raises(ValueError, match="no camera 'wrist'.*front"):
        SceneCamera(sim.model, "wrist", 96, 96)


def test_reset_places_the_cube_at_random_in_the_region_and_in_view(scene):
    sim, _ = scene
    config = TaskConfig(region_x=(0.4, 0.6), region_y=(-0.2, 0.2), seed=3)
    data = mujoco.MjData(sim.model)
    task = ReachTask(sim.model, config)
    positions = np.array([task.reset(data) for _ in range(20)])
    assert ((positions[:, 0] >= 0.4) & (positions[:, 0] <= 0.6)).all()
    assert ((positions[:, 1] >= -0.2) & (positions[:, 1] <= 0.2)).all()
    np.testing.assert_allclose(positions[:, 2], TABLE_TOP_Z + CUBE_HALF_SIZE)
    assert np.ptp(positions[:, 0]) > 0.1 and np.ptp(positions[:, 1]) > 0.2  # spread over the region
    assert task.episode == 20
    again = ReachTask(sim.model, config)
    np.testing.assert_array_equal(positions[0], again.reset(mujoco.MjData(sim.model)))  # same seed, same episodes
    # in the image: a different place after each reset, always in view
    camera = SceneCamera(sim.model, CAMERA, 96, 96)
    try:
        centroids = []
        for position in ((0.4, -0.2), (0.6, 0.2), (0.5, 0.0)):
            task.reset(data, object_position=(*position, CUBE_HALF_SIZE))
            centroids.append(red_centroid(camera.render(data.qpos)))
    finally:
        camera.close()
    assert all(c is not None for c in centroids)
    # +y is to the image's right, nearer (larger x) is lower in the image
    (row_a, col_a), (row_b, col_b), _ = centroids
    assert col_b > col_a + 10 and row_b > row_a + 5


def test_success_needs_the_tcp_on_the_cube_for_the_hold_time(scene):
    sim, _ = scene
    config = TaskConfig(tolerance_m=0.03, hold_s=0.2)
    data = mujoco.MjData(sim.model)
    task = ReachTask(sim.model, config)
    task.reset(data)
    task.set_arm(data, (0.2, 0.3, 0.0, -2.0, 0.0, 2.3, 0.985))
    mujoco.mj_forward(sim.model, data)
    tcp = task.tcp_position(data)

    def put_cube(offset):  # cube so that its top centre is at tcp - offset
        task.place_object(data, tcp - np.asarray(offset) - (0, 0, CUBE_HALF_SIZE), yaw=0.3)
        mujoco.mj_forward(sim.model, data)

    def advance(seconds: float) -> bool:
        end = data.time + seconds
        while data.time < end - 1e-9:
            data.time += 0.001
            task.update(data)
        return task.success

    put_cube((0.0, 0.0, 0.5))  # far below the TCP
    assert not advance(0.5) and not task.episode_success
    put_cube((0.0, 0.0, 0.02))  # TCP 2 cm above the top: within tolerance
    assert task.distance(data) == pytest.approx(0.02, abs=1e-9)
    assert not advance(0.15)  # not held long enough yet
    assert advance(0.06) and task.success and task.episode_success
    state = task.state(data)
    assert state.success and state.distance == pytest.approx(0.02, abs=1e-9)
    np.testing.assert_allclose(state.tcp_position, tcp)
    put_cube((0.02, 0.025, 0.0))  # 3.2 cm to the side: outside the tolerance
    assert not advance(0.3) and task.episode_success  # success now false, but it happened this episode
    assert task.state(data).min_distance == pytest.approx(0.02, abs=1e-9)  # the closest since the reset
    put_cube((0.0, 0.0, 0.0))
    assert not advance(0.1)  # the hold starts again
    assert advance(0.11) and task.state(data).min_distance == pytest.approx(0.0, abs=1e-9)
    task.reset(data)
    assert not task.success and not task.episode_success
    assert task.state(data).min_distance == pytest.approx(task.distance(data))  # starts over at the reset


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"region_x": (0.6, 0.4)}, "region_x must be"),
        ({"region_y": (-0.7, 0.2)}, "region_y .* off the table"),
        ({"region_x": (0.0, 0.3), "region_y": (-0.1, 0.1)}, "robot's base"),
        ({"region_x": (0.6, 0.85)}, "cannot get on top"),
        ({"tolerance_m": 0.0}, "tolerance_m"),
        ({"hold_s": -1.0}, "hold_s"),
    ],
)
def test_task_config_refuses_impossible_settings(changes, message):
    with pytest.raises(ConfigError, match=message):
        TaskConfig(**changes)


def test_franky_sim_serves_the_scene_and_frees_the_address_on_stop():
    franky = pytest.importorskip("franky")
    from sdm_controller.sim.franka_sim import FrankaSim, SimConfig

    first = FrankaSim(SimConfig(hostname=HOSTNAME, task=TaskConfig(seed=1)))
    first.start()
    try:
        assert first.hostname == HOSTNAME and first.running
        robot = franky.Robot(HOSTNAME, realtime_config=franky.RealtimeConfig.Ignore)
        np.testing.assert_allclose(robot.current_joint_positions, HOME_Q, atol=2e-3)
        frames = []
        loop = CameraLoop(lambda: SceneCamera(first.model, CAMERA, 32, 32), first.snapshot, frames.append, 20.0)
        loop.start()
        time.sleep(0.5)
        before = first.task_state.object_position
        result = first.reset_task()
        assert not result.preempted_motion and result.episode == 2
        assert np.linalg.norm(np.subtract(result.object_position[:2], before[:2])) > 1e-3
        time.sleep(0.3)
        loop.stop()
        assert len(frames) >= 3 and loop.error is None
        stamps = [f.stamp_ns for f in frames]
        sim_times = [f.sim_time for f in frames]
        assert stamps == sorted(stamps) and sim_times == sorted(sim_times)
        assert frames[-1].image.shape == (32, 32, 3)
        np.testing.assert_allclose(first.task_state.object_position[:2], result.object_position[:2], atol=2e-3)
        with pytest.raises(OSError, match=HOSTNAME):  # the address is taken while the first one serves
            FrankaSim(SimConfig(hostname=HOSTNAME)).start()
    finally:
        first.stop()
    assert not first.running
    second = FrankaSim(SimConfig(hostname=HOSTNAME))  # same process, same address: free again
    second.start()
    try:
        robot = franky.Robot(HOSTNAME, realtime_config=franky.RealtimeConfig.Ignore)
        np.testing.assert_allclose(robot.current_joint_positions, HOME_Q, atol=2e-3)
    finally:
        second.stop()
