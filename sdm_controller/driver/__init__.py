"""The Franka driver's ROS-free core: received chunks as timed trajectories, command limits,
the watchdog, the 1 kHz link to the robot through franky, and the control loop that joins them.

Only :mod:`sdm_controller.driver.franky_link` imports franky; ``sdm_controller.ros.franka_driver``
is the thin ROS adapter around :class:`~sdm_controller.driver.core.DriverCore`.
"""
