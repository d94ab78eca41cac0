"""WorkerThreadsExecutor against rclpy's MultiThreadedExecutor, and SpinThread: real rclpy, DDS on localhost."""

from __future__ import annotations

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from node_process import ros_context  # noqa: E402
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from sdm_controller.ros.executors import WorkerThreadsExecutor  # noqa: E402
from sdm_controller.ros.spin_thread import SpinThread  # noqa: E402

TOPICS = 3
RATE_HZ = 200.0
FEED_S = 2.0


def feed(make_executor) -> tuple[float, int, int, set[str]]:
    """Three 200 Hz topics into a node with one callback group per subscription and a 40 Hz timer.

    Returns the spin thread's CPU time, the messages received and sent, and the callback threads.
    """
    contexts = [Context(), Context()]
    for context in contexts:
        rclpy.init(context=context)
    receiver = Node("executor_receiver", context=contexts[0])
    sender = Node("executor_sender", context=contexts[1])
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
    received = [0]
    threads: set[str] = set()
    lock = threading.Lock()

    def on_message(msg: JointState) -> None:
        sum(range(2000))  # about the Python work of converting a sensor message
        with lock:
            received[0] += 1
            threads.add(threading.current_thread().name)

    for i in range(TOPICS):
        receiver.create_subscription(JointState, f"probe_{i}", on_message, qos,
                                     callback_group=MutuallyExclusiveCallbackGroup())
    receiver.create_timer(0.025, lambda: sum(range(2000)), callback_group=MutuallyExclusiveCallbackGroup())
    publishers = [sender.create_publisher(JointState, f"probe_{i}", qos) for i in range(TOPICS)]
    executor = make_executor(contexts[0])
    executor.add_node(receiver)
    spin_cpu = [0.0]

    def spin() -> None:
        start = time.thread_time()
        executor.spin()
        spin_cpu[0] = time.thread_time() - start

    spinner = threading.Thread(target=spin)
    spinner.start()
    try:
        deadline = time.monotonic() + 10
        while sum(p.get_subscription_count() for p in publishers) < TOPICS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        with lock:
            received[0] = 0
        sent = 0
        due = time.monotonic()
        end = due + FEED_S
        while due < end:
            for publisher in publishers:
                publisher.publish(JointState(name=["j"], position=[1.0]))
                sent += 1
            due += 1.0 / RATE_HZ
            time.sleep(max(0.0, due - time.monotonic()))
        time.sleep(0.3)
    finally:
        executor.shutdown(timeout_sec=5)
        spinner.join(10)
        receiver.destroy_node()
        sender.destroy_node()
        for context in contexts:
            rclpy.try_shutdown(context=context)
    return spin_cpu[0], received[0], sent, threads


def test_callbacks_run_on_workers_and_keep_up_with_less_spin_cpu_than_multithreaded():
    """Up to three paired runs: a CPU-time comparison on a loaded 2-core machine is noisy (another
    process taking a core changes how often MultiThreadedExecutor re-dispatches), so one clear win is
    the evidence; every run must deliver the messages on worker threads."""
    ratios = []
    for _ in range(3):
        reference_cpu, reference_received, reference_sent, _ = feed(lambda c: MultiThreadedExecutor(4, context=c))
        cpu, received, sent, threads = feed(lambda c: WorkerThreadsExecutor(4, context=c))
        assert threads and all(name.startswith("ros-callbacks") for name in threads)
        assert received >= 0.95 * sent, f"received {received} of {sent}"
        ratios.append(
            f"spin thread: {cpu:.2f} s CPU vs MultiThreadedExecutor {reference_cpu:.2f} s "
            f"(which received {reference_received} of {reference_sent})"
        )
        if cpu < 0.7 * reference_cpu:
            return
    pytest.fail("; ".join(ratios))


def test_callback_exceptions_surface_from_spin():
    context = Context()
    rclpy.init(context=context)
    node = Node("executor_raiser", context=context)
    executor = WorkerThreadsExecutor(num_threads=2, context=context)
    executor.add_node(node)

    def fail() -> None:
        raise RuntimeError("callback failed")

    node.create_timer(0.01, fail)
    try:
        with pytest.raises(RuntimeError, match="callback failed"):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
        rclpy.try_shutdown(context=context)


def test_fewer_than_two_threads_is_refused():
    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ValueError, match="SingleThreadedExecutor"):
            WorkerThreadsExecutor(num_threads=1, context=context)
    finally:
        rclpy.try_shutdown(context=context)


def test_spin_thread_delivers_and_always_ends_when_closed():
    """SpinThread: callbacks run, and close() returns True within a poll period however soon it is
    called after the start (the window where rclpy's own shutdown can strand a spinning thread)."""
    with ros_context() as context:
        node = Node("spin_thread_probe", context=context)
        received = threading.Event()
        node.create_subscription(JointState, "spin_probe", lambda msg: received.set(), 10)
        publisher = node.create_publisher(JointState, "spin_probe", 10)
        spinner = SpinThread(node, poll_s=0.05)
        deadline = time.monotonic() + 10
        while not received.is_set() and time.monotonic() < deadline:
            publisher.publish(JointState())
            time.sleep(0.05)
        assert received.is_set(), "no callback ran on the SpinThread"
        assert spinner.close()
        for delay in [0.0, 0.0005, 0.001, 0.002, 0.005] * 10:
            spinner = SpinThread(node, poll_s=0.05)
            time.sleep(delay)
            start = time.monotonic()
            assert spinner.close(), f"the spin thread did not end (closed {delay * 1e3:.1f} ms after start)"
            assert time.monotonic() - start < 1.0
        node.destroy_node()
