"""The simulated FR3 work cell: franky-sim's robot on a table, a cube, a fixed camera.

franky-sim (``franky_sim.mujoco_simulator.MujocoSimulator``) builds its MJCF as an ElementTree
and lets a caller add to it before the model is compiled; :func:`make_simulator` does that:

* the FR3 stands at the world origin on a table whose top is the plane z = 0 (the floor is
  lowered below it), so the robot's base frame (what franky's ``O_T_EE`` is given in) is the
  world frame;
* a coloured cube with a free joint (``CUBE_BODY``), placed by :mod:`sdm_controller.sim.franka_task`;
* a site ``TCP_SITE`` on the hand between the fingertips (0.1034 m from the flange, libfranka's
  default ``F_T_EE`` of the Franka hand);
* a fixed camera ``CAMERA`` in front of the table looking back at the arm and the cube region.

Rendering on a CPU (llvmpipe) is dominated by shadows, multisampling and the FR3's visual meshes
(372k vertices). The scene turns shadows off and multisampling to 0, and
:func:`render_options` draws the collision meshes (geom group 3, given colours here) instead of
the visual ones (group 2): a 96x96 frame costs about 2 ms instead of 120 ms.

Names in the compiled model: franky-sim prefixes the robot's joints and bodies with
``robot0_`` (``ROBOT_PREFIX``); the names added here are not prefixed.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

ROBOT_PREFIX = "robot0_"
ARM_JOINTS = tuple(f"fr3_joint{i}" for i in range(1, 8))
FINGER_JOINTS = ("finger_joint1", "finger_joint2")
# libfranka's "ready" pose: TCP about 0.31 m in front of the base, 0.49 m up, pointing down.
HOME_Q = (0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398)
HOME_HAND_WIDTH = 0.08  # open

CUBE_BODY = "cube"
CUBE_JOINT = "cube_joint"
CUBE_GEOM = "cube_geom"
CUBE_HALF_SIZE = 0.025
CUBE_RGBA = "0.9 0.1 0.1 1"
TCP_SITE = "tcp"
TCP_OFFSET = 0.1034  # flange (= the hand body's origin) → TCP along the hand's z axis
CAMERA = "front"
# In front of the table, above it, looking down at the cube's region so that the 5 cm cube spans
# about 8 pixels of a 96x96 image (5 from 1.25 m); the hand comes into view as it descends.
CAMERA_EYE = (1.05, 0.0, 0.65)
CAMERA_TARGET = (0.45, 0.0, 0.0)
CAMERA_FOVY_DEG = 45.0
TABLE_TOP_Z = 0.0
TABLE_HALF_SIZE = (0.55, 0.6, 0.02)  # x, y, z
TABLE_CENTER_X = 0.35  # the table spans x in [-0.2, 0.9] under and in front of the robot
FLOOR_Z = -0.75
# Collision meshes carry no material; these colours make the arm readable in camera images.
ARM_RGBA = "0.92 0.92 0.92 1"
HAND_RGBA = "0.25 0.25 0.25 1"


@dataclass(frozen=True)
class SceneIndex:
    """Addresses and ids in the compiled model (what the task, the camera and an expert index with)."""

    arm_qpos: np.ndarray  # (7,) qpos addresses of fr3_joint1..7
    arm_dof: np.ndarray  # (7,) qvel addresses
    finger_qpos: np.ndarray  # (2,)
    finger_dof: np.ndarray  # (2,)
    cube_qpos: int  # first of 7 (x y z qw qx qy qz)
    cube_dof: int  # first of 6
    cube_body: int
    tcp_site: int
    camera: int

    @classmethod
    def from_model(cls, model: mujoco.MjModel, camera: str = CAMERA) -> SceneIndex:
        def joint(name: str) -> int:
            jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)
            if jid < 0:
                raise ValueError(f"the scene has no joint '{name}'; was it built by make_simulator?")
            return jid

        def object_id(kind: mujoco.mjtObj, name: str, what: str) -> int:
            oid = mujoco.mj_name2id(model, kind, name)
            if oid < 0:
                raise ValueError(f"the scene has no {what} '{name}'{_known(model, kind)}")
            return oid

        arm = [joint(ROBOT_PREFIX + name) for name in ARM_JOINTS]
        fingers = [joint(ROBOT_PREFIX + name) for name in FINGER_JOINTS]
        cube = joint(CUBE_JOINT)
        return cls(
            arm_qpos=model.jnt_qposadr[arm].copy(),
            arm_dof=model.jnt_dofadr[arm].copy(),
            finger_qpos=model.jnt_qposadr[fingers].copy(),
            finger_dof=model.jnt_dofadr[fingers].copy(),
            cube_qpos=int(model.jnt_qposadr[cube]),
            cube_dof=int(model.jnt_dofadr[cube]),
            cube_body=object_id(mujoco.mjtObj.mjOBJ_BODY, CUBE_BODY, "body"),
            tcp_site=object_id(mujoco.mjtObj.mjOBJ_SITE, TCP_SITE, "site"),
            camera=object_id(mujoco.mjtObj.mjOBJ_CAMERA, camera, "camera"),
        )


def _known(model: mujoco.MjModel, kind: mujoco.mjtObj) -> str:
    count = {mujoco.mjtObj.mjOBJ_CAMERA: model.ncam, mujoco.mjtObj.mjOBJ_SITE: model.nsite}.get(kind, 0)
    names = [mujoco.mj_id2name(model, kind, i) for i in range(count)]
    return f" (it has: {', '.join(n for n in names if n)})" if names else ""


def _vec(values: Sequence[float]) -> str:
    return " ".join(f"{v:g}" for v in values)


def add_work_cell(sim) -> None:
    """Add the table, cube, TCP site and camera to a MujocoSimulator that has its robot (before start)."""
    scene, world = sim.scene, sim.worldbody
    quality = scene.find("visual/quality")
    quality.set("shadowsize", "0")  # the renderer also turns shadows off; 0 skips the shadow map
    quality.set("offsamples", "0")
    for light in world.iter("light"):
        light.set("castshadow", "false")
    ground = world.find("geom[@name='ground']")
    if ground is not None:
        ground.set("pos", f"0 0 {FLOOR_Z:g}")

    asset = scene.find("asset")
    ET.SubElement(asset, "material", name="table_top", rgba="0.72 0.6 0.45 1")
    sx, sy, sz = TABLE_HALF_SIZE
    table = ET.SubElement(world, "body", name="table", pos=_vec((TABLE_CENTER_X, 0.0, TABLE_TOP_Z - sz)))
    ET.SubElement(table, "geom", name="table_top", type="box", size=_vec((sx, sy, sz)), material="table_top", group="3")
    leg_z = (FLOOR_Z - (TABLE_TOP_Z - 2 * sz)) / 2  # legs reach from the floor to the top's underside
    for i, (x, y) in enumerate(
        ((sx - 0.04, sy - 0.04), (sx - 0.04, 0.04 - sy), (0.04 - sx, sy - 0.04), (0.04 - sx, 0.04 - sy))
    ):
        ET.SubElement(
            table,
            "geom",
            name=f"table_leg{i}",
            type="box",
            size=_vec((0.03, 0.03, -leg_z)),
            pos=_vec((x, y, -sz + leg_z)),
            material="table_top",
            group="3",
            contype="0",
            conaffinity="0",
        )

    h = CUBE_HALF_SIZE
    cube = ET.SubElement(world, "body", name=CUBE_BODY, pos=_vec((0.5, 0.0, TABLE_TOP_Z + h)))
    ET.SubElement(cube, "freejoint", name=CUBE_JOINT)
    ET.SubElement(
        cube,
        "geom",
        name=CUBE_GEOM,
        type="box",
        size=_vec((h, h, h)),
        rgba=CUBE_RGBA,
        mass="0.05",
        group="3",
        friction="1 0.005 0.0001",
    )

    hand = world.find(f".//body[@name='{ROBOT_PREFIX}hand']")
    if hand is None:
        raise ValueError("add_work_cell needs the robot: call sim.add_robot() first")
    ET.SubElement(
        hand, "site", name=TCP_SITE, pos=_vec((0.0, 0.0, TCP_OFFSET)), size="0.005", rgba="0 1 0 1", group="4"
    )
    for body in world.iter("body"):
        if not body.get("name", "").startswith(ROBOT_PREFIX):
            continue
        on_hand = any(key in body.get("name", "") for key in ("hand", "finger"))
        for geom in body.findall("geom"):
            if geom.get("class") == "collision" or geom.get("class", "").startswith("fingertip"):
                geom.set("rgba", HAND_RGBA if on_hand else ARM_RGBA)

    # In front of the table, looking back at the robot and down at the cube's region.
    ET.SubElement(
        world, "camera", name=CAMERA, mode="fixed", fovy=f"{CAMERA_FOVY_DEG:g}", **_look_at(CAMERA_EYE, CAMERA_TARGET)
    )


def _look_at(eye: Sequence[float], target: Sequence[float]) -> dict[str, str]:
    """MJCF camera ``pos`` and ``xyaxes`` for a camera at ``eye`` looking at ``target``, z up."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    forward = target - eye
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return {"pos": _vec(eye), "xyaxes": _vec((*np.round(right, 6), *np.round(up, 6)))}


def make_simulator(home_q: Sequence[float] = HOME_Q, hand_width: float = HOME_HAND_WIDTH):
    """A franky-sim ``MujocoSimulator`` with one FR3 at ``home_q`` and the work cell, not yet started.

    Start it with ``franky_sim.SimulationServer(sim).init()`` (serves libfranka) or, for tests
    without sockets, ``sim.start()``; then ``sim.model`` / ``sim.data`` exist.
    """
    from franky_sim.mujoco_simulator import MujocoSimulator

    if len(home_q) != 7:
        raise ValueError(f"home_q needs 7 joint positions (fr3_joint1..7), got {len(home_q)}")
    sim = MujocoSimulator(enable_visualization=False)
    sim.init()
    robot = sim.add_robot(initial_q=tuple(float(q) for q in home_q), initial_hand_width=float(hand_width))
    add_work_cell(sim)
    return sim, robot


def work_cell_model() -> mujoco.MjModel:
    """The compiled work-cell model alone (no server, no stepping): for kinematics beside a simulator."""
    sim, _ = make_simulator()
    sim.start()
    return sim.model


def render_options() -> mujoco.MjvOption:
    """Visual options for camera images: collision meshes (group 3) instead of visual meshes (group 2)."""
    option = mujoco.MjvOption()
    option.geomgroup[:] = 0
    option.geomgroup[3] = 1
    option.sitegroup[:] = 0
    return option
