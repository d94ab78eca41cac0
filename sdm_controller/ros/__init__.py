"""ROS 2 nodes: thin adapters between messages and the ROS-free core in ``sdm_controller.control``.

* ``policy_node`` — camera frames + joint states in, timed action chunks out;
* ``conversions`` — the one module that reads and writes message fields;
* ``parameters`` — parameter declarations (descriptors, ranges) from the core's parameter table.
"""
