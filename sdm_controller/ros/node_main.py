"""The ``main`` of every node: start, spin, and shut down in order whenever Ctrl-C comes.

Ctrl-C (or a launcher's SIGINT) can arrive at any moment: while rclpy creates the node, while the
node connects to a robot, inside a callback, or halfway through the shutdown. Python-level SIGINT
is ignored (see :mod:`sdm_controller.ros.sigint`), so it is rclpy's handler that shuts the
context down. What happens next depends on where the node was:

* spinning: ``spin`` raises ``ExternalShutdownException``;
* starting: whatever rclpy call comes next fails because the context is gone (a parameter event,
  a publisher). That failure is the shutdown the user asked for, not an error: exit 0.

A start failure of the node's own (``start_errors`` raised by ``make_node`` or ``start``: a bad
parameter, an unreachable robot, a taken address) is logged as fatal and gives a non-zero exit
status. The shutdown order is always: the
executor (no more callbacks), ``node.close()`` (the node's threads and devices), the node, rclpy.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from sdm_controller.ros.sigint import ignore_sigint

#: GIL switch interval for nodes with threads that must run on time (the policy's inference, the
#: driver's control loop, the bridge's simulation); Python's default of 5 ms would delay them
#: behind message conversion on the executor thread.
TIMELY_SWITCH_INTERVAL_S = 0.0005


def run_node(
    make_node: Callable[[], Node],
    name: str,
    args: list[str] | None = None,
    *,
    start: Callable[[Node], None] | None = None,
    start_errors: tuple[type[BaseException], ...] = (),
    start_error_code: int = 1,
    make_executor: Callable[[], Executor] = SingleThreadedExecutor,
    switch_interval_s: float | None = None,
) -> None:
    """Create the node, run ``start(node)`` if given, spin until shutdown, then close in order.

    Every node of this package has ``close()``: it releases the node's threads and devices and
    returns False when a thread could not be joined (the process then exits without tearing down
    the objects that thread still uses).

    ``switch_interval_s``: Python's GIL switch interval, for nodes whose own threads must run on
    time while the executor thread converts messages (Python's default is 5 ms).
    """
    if switch_interval_s is not None:
        sys.setswitchinterval(switch_interval_s)
    ignore_sigint()
    rclpy.init(args=args)
    executor = make_executor()
    node = None
    code = 0
    joined = True
    try:
        try:
            node = make_node()
            if start is not None:
                start(node)
        except start_errors as exc:
            if not rclpy.ok():
                raise  # a consequence of the shutdown (below), not the node's own failure
            logger = node.get_logger() if node is not None else rclpy.logging.get_logger(name)
            logger.fatal(f"cannot start: {exc}")
            code = start_error_code
        else:
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():
            raise
        # the context was shut down (Ctrl-C) while the node was starting: what failed, failed for that
        rclpy.logging.get_logger(name).info("shutdown requested while starting")
    finally:
        ignore_sigint()
        executor.shutdown(timeout_sec=1.0)
        if node is not None:
            joined = node.close() is not False
            if not joined:
                node.get_logger().error("a thread did not end (blocked in a device call); exiting without it")
            node.destroy_node()
        rclpy.try_shutdown()
        ignore_sigint()  # rclpy's shutdown may have put its previous handler back
    if not joined:
        # interpreter teardown would destroy objects under the thread that is still using them
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        sys.exit(code)
