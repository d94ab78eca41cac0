"""The policy node's decisions, without ROS: everything a plain pytest can reach.

Data flows through these modules in this order (the node in ``sdm_controller.ros`` only turns
messages into the plain values they take and their results back into messages; image and joint
conversions, statistics and rejection reasons are the shared vocabulary in ``sdm_controller.common``):

* ``policy_interface`` — what an artifact needs as input and gives as output (the contract
  between ``policy.json`` and the robot's topics);
* ``observation`` — per-stream history aligned by header stamps, staleness;
* ``chunk`` — an action chunk as a timed value (stamps, ``time_from_start``, velocities);
* ``blending`` — how consecutive chunks are combined; ``limits`` — position/step/velocity clamps;
* ``settings`` — the node's parameters: one table (defaults, ranges, meanings) and validation;
* ``controller`` — one inference cycle tying the above together, plus the counters and
  statistics the diagnostics report;
* ``runner`` — the engine interface the controller calls, and loading it;
* ``engine_swap`` — quick checks of a new engine, its background load and the hand-over;
* ``frames`` — how one frame of a per-stream input (a camera image, ...) is taken, by kind.
"""
