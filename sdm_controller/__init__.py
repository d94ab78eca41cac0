"""sdm_controller: one-step distilled diffusion policies for Franka arms.

Offline (no ROS): ``data`` → ``policy`` (teacher) → ``distill`` → ``runtime`` (artifacts, engines).
Online: ``ros`` nodes run an artifact through an engine and drive the robot.
"""

__version__ = "0.1.0"
