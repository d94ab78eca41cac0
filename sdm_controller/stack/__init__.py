"""Starting the ROS 2 stack: one description, two launchers.

* ``description`` — which nodes, executables, parameter files, overrides and remappings make up a
  stack, and its launch arguments (plain Python, no ROS import);
* ``supervisor`` — the pip launcher (``python -m sdm_controller launch franka``) that runs those
  nodes as supervised child processes; ``launch/franka.launch.py`` is the ``ros2 launch`` one.
"""
