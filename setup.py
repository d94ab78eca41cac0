"""Setuptools entry point for the sdm_controller ament_python package.

colcon's ament_python build type drives this file (a PEP 621 ``[project]`` table is
intentionally not used), so all packaging metadata lives here and in setup.cfg.
"""

from glob import glob

from setuptools import find_packages, setup

PACKAGE_NAME = "sdm_controller"

setup(
    name=PACKAGE_NAME,
    version="0.1.0",
    packages=find_packages(exclude=["tests", "tests.*", "benchmarks", "benchmarks.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE_NAME}"]),
        (f"share/{PACKAGE_NAME}", ["package.xml"]),
        # glob() returns [] when a folder is empty or missing; that is fine for data_files.
        (f"share/{PACKAGE_NAME}/launch", sorted(glob("launch/*.launch.py"))),
        (f"share/{PACKAGE_NAME}/config", sorted(glob("config/*.yaml"))),
        # shipped policy artifacts, one folder each (policy.json, weights, MODEL_CARD.md, ...)
        *[(f"share/{PACKAGE_NAME}/{path.rstrip('/')}", sorted(glob(f"{path}*"))) for path in sorted(glob("models/*/"))],
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    python_requires=">=3.10",
    maintainer="sdm_controller developers",
    maintainer_email="sdm-controller@example.com",
    description=(
        "One-step distilled diffusion policies (SDM) for Franka arms: "
        "offline training/distillation and a ROS 2 controller"
    ),
    license="MIT",
    entry_points={
        "console_scripts": [
            "sdm = sdm_controller.cli:main",
            "sdm-launch = sdm_controller.cli:launch_main",
            "collect = sdm_controller.cli:collect_main",
            "train = sdm_controller.cli:train_main",
            "evaluate = sdm_controller.cli:evaluate_main",
            "distill = sdm_controller.cli:distill_main",
            "bench = sdm_controller.cli:bench_main",
            "export = sdm_controller.cli:export_main",
            "sim = sdm_controller.cli:sim_main",
            "policy_node = sdm_controller.ros.policy_node:main",
            "franka_driver = sdm_controller.ros.franka_driver:main",
            "realsense_camera = sdm_controller.ros.realsense_camera:main",
            "mujoco_bridge = sdm_controller.ros.mujoco_bridge:main",
            "recorder = sdm_controller.ros.recorder:main",
            "franka_expert = sdm_controller.ros.franka_expert:main",
        ],
    },
)
