"""policy_node over DDS: observation → chunk overhead, and chunk rate against the engine's speed.

    OMP_NUM_THREADS=1 .venv/bin/python -m sdm_controller.bench.node_latency            # ~8 min on 2 cores

For the one-step policy and, for contrast, a teacher at DDIM-10 (untrained test artifacts, two
96x96 cameras, tiny UNet, the small ``convnet`` image encoder so that a run takes minutes: the
node's overhead depends on neither the weights nor the engine's speed), ``policy_node`` runs as
its own process and this process feeds it over real DDS:

1. **latency** (``trigger: observation``): two 640x480 bgr8 cameras (a RealSense-sized frame) and
   FR3 joint states with one stamp per tick, at a rate the engine keeps up with (``--feed-hz``
   one-step, ``--teacher-feed-hz`` teacher: a frame never waits behind a previous cycle), until
   ``--cycles`` / ``--teacher-cycles`` chunks arrived.
   Per chunk: image publish (its stamp) → chunk received here, and the **overhead** = that minus
   the engine's own time for the same chunk (``~/cycle_timing``): DDS transport both ways,
   decoding and resizing the frames, the observation window, limits, the message.
2. **rate** (``trigger: timer`` at 200 Hz, faster than the engine): 96x96 rgb8 frames at
   ``--rate-feed-hz`` for ``--rate-seconds``; the achieved chunk rate divided by what the engine
   allows, ``min(1 / forward time, 200 Hz, frame rate)``.

3. **transport floor**: the latency phase once more through ``transport_floor_node.py``, a node
   on the same topics and QoS that does no work: rclpy and DDS between two Python processes on
   this machine, the part of the overhead no node can remove.

Writes ``benchmarks/results/node_latency.json`` (DESIGN's results format) and a PNG (latency and
overhead histograms). DDS discovery is pinned to this machine on a private domain.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(102 + os.getpid() % 100)  # 102..201: apart from the test suite's 2..101

import json  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CAMERAS = ("wrist", "scene")
HOME = [0.0, 0.0, 0.0, -1.5, 0.0, 1.8, 0.0, 0.02]
RATE_CAP_HZ = 200.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--cycles", type=int, default=2000, help="chunks measured, one-step (latency phase)")
    parser.add_argument("--teacher-cycles", type=int, default=600, help="chunks measured, teacher DDIM-10")
    parser.add_argument("--encoder", default="convnet", choices=("convnet", "resnet18"))
    parser.add_argument("--image", default="640x480", help="WxH of the bgr8 frames of the latency phase")
    parser.add_argument("--feed-hz", type=float, default=15.0, help="camera rate of the latency phase, one-step")
    parser.add_argument("--teacher-feed-hz", type=float, default=5.0, help="the same for the teacher")
    parser.add_argument("--rate-feed-hz", type=float, default=100.0, help="camera rate of the rate phase")
    parser.add_argument("--rate-seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "node_latency.json")
    return parser.parse_args(argv)


class Probe:
    """Test-side node: feeds cameras and joints, records chunks and the node's cycle timing."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter_client import AsyncParameterClient
        from sensor_msgs.msg import Image, JointState
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory

        from sdm_controller.common.fr3 import FR3_JOINTS

        rclpy.init()
        self.Image, self.JointState = Image, JointState
        self.node = Node("node_latency_bench")
        self.lock = threading.Lock()
        self.received: dict[int, int] = {}  # chunk stamp -> receive time (ns, this node's clock)
        self.engine_ms: dict[int, float] = {}  # chunk stamp -> engine time of that chunk
        self.node.create_subscription(JointTrajectory, "action_chunk", self._on_chunk, 100)
        self.node.create_subscription(Float64MultiArray, "policy_node/cycle_timing", self._on_timing, 100)
        self.image_pubs = [self.node.create_publisher(Image, f"{c}/image_raw", 10) for c in CAMERAS]
        self.joint_pub = self.node.create_publisher(JointState, "joint_states", 10)
        self.names = list(FR3_JOINTS)
        self.params = AsyncParameterClient(self.node, "policy_node")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def _on_chunk(self, msg) -> None:
        now = self.node.get_clock().now().nanoseconds
        with self.lock:
            self.received[msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec] = now

    def _on_timing(self, msg) -> None:
        with self.lock:
            self.engine_ms[int(msg.data[0]) * 1_000_000_000 + int(msg.data[1])] = float(msg.data[2])

    def reset(self) -> None:
        with self.lock:
            self.received.clear()
            self.engine_ms.clear()

    def count(self) -> int:
        with self.lock:
            return len(self.received)

    def set(self, **values) -> None:
        from rclpy.parameter import Parameter

        if not self.params.wait_for_services(timeout_sec=30):
            raise RuntimeError("policy_node's parameter services did not appear")
        future = self.params.set_parameters([Parameter(k, value=v) for k, v in values.items()])
        deadline = time.monotonic() + 20
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not future.done() or not all(r.successful for r in future.result().results):
            raise RuntimeError(f"policy_node refused {values}")

    def feed(self, width: int, height: int, encoding: str, hz: float, until) -> float:
        """Publish frames + joints at ``hz`` until ``until()``; returns the achieved frame rate."""
        channels = 3
        pixels = np.random.default_rng(0).integers(0, 256, width * height * channels, dtype=np.uint8).tobytes()
        period, ticks, start = 1.0 / hz, 0, time.monotonic()
        while not until():
            stamp = self.node.get_clock().now().to_msg()
            for pub in self.image_pubs:
                msg = self.Image(height=height, width=width, encoding=encoding, step=width * channels, data=pixels)
                msg.header.stamp = stamp
                pub.publish(msg)
            joints = self.JointState(name=self.names, position=HOME)
            joints.header.stamp = stamp
            self.joint_pub.publish(joints)
            ticks += 1
            time.sleep(max(0.0, start + ticks * period - time.monotonic()))
        return ticks / (time.monotonic() - start)

    def close(self) -> None:
        import rclpy

        self.executor.shutdown()
        self.spinner.join(5)
        self.node.destroy_node()
        rclpy.try_shutdown()


def start_node(artifact: Path, backend: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sdm_controller.ros.policy_node", "--ros-args", "-p", f"artifact:={artifact}",
         "-p", f"backend:={backend}", "-p", "sampler_steps:=10", "-p", "trigger:=observation",
         "-p", f"inference_rate_hz:={RATE_CAP_HZ}"],
        cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")),
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def start_floor(log: Path) -> subprocess.Popen:
    """``transport_floor_node.py``: the same topics and QoS, no work (see its docstring)."""
    return subprocess.Popen(
        [sys.executable, "-m", "sdm_controller.bench.transport_floor_node"],
        cwd=REPO, env=dict(os.environ), stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


def latency_phase(
    probe: Probe, method: str, args: argparse.Namespace, log: Path, cycles: int, feed_hz: float
) -> tuple[dict, np.ndarray, np.ndarray]:
    """``trigger: observation``: (row, image publish → chunk received ms, that minus the engine time)."""
    from tqdm import tqdm

    probe.reset()
    deadline = time.monotonic() + 60
    width, height = (int(v) for v in args.image.split("x"))
    probe.feed(width, height, "bgr8", feed_hz, lambda: probe.count() >= 20 or time.monotonic() > deadline)
    if probe.count() < 20:
        raise RuntimeError(f"{method}: no chunks within 60 s; node log: {log}")
    probe.reset()
    bar = tqdm(total=cycles, desc=f"{method} latency")

    def done() -> bool:
        count = min(probe.count(), cycles)
        if count != bar.n:
            bar.update(count - bar.n)
        return count >= cycles

    fed_hz = probe.feed(width, height, "bgr8", feed_hz, done)
    bar.close()
    time.sleep(0.5)  # the last timing records
    with probe.lock:
        pairs = [(probe.received[s] - s, probe.engine_ms[s]) for s in probe.received if s in probe.engine_ms]
    total = np.array([p[0] for p in pairs]) / 1e6
    engine = np.array([p[1] for p in pairs])
    overhead = total - engine
    row = {
        "method": method, "phase": "latency", "backend": args.backend, "trigger": "observation",
        "image": f"2 x {args.image} bgr8", "feed_hz": round(fed_hz, 1), "n": int(len(pairs)),
        "p50_ms": float(np.percentile(total, 50)), "p99_ms": float(np.percentile(total, 99)),
        "engine_p50_ms": float(np.percentile(engine, 50)), "engine_p99_ms": float(np.percentile(engine, 99)),
        "overhead_p50_ms": float(np.percentile(overhead, 50)),
        "overhead_p99_ms": float(np.percentile(overhead, 99)),
    }  # fmt: skip
    return row, total, overhead


def rate_phase(probe: Probe, method: str, args: argparse.Namespace) -> dict:
    """``trigger: timer`` at RATE_CAP_HZ: the achieved chunk rate against what the engine allows."""
    probe.set(trigger="timer")
    probe.reset()
    end = time.monotonic() + 3.0  # settle into the timer mode
    probe.feed(96, 96, "rgb8", args.rate_feed_hz, lambda: time.monotonic() > end)
    probe.reset()
    start = time.monotonic()
    end = start + args.rate_seconds
    fed_hz = probe.feed(96, 96, "rgb8", args.rate_feed_hz, lambda: time.monotonic() > end)
    elapsed = time.monotonic() - start
    with probe.lock:
        chunks = len(probe.received)
        forward = float(np.median(list(probe.engine_ms.values())))
    chunk_rate = chunks / elapsed
    limit = min(1000.0 / forward, RATE_CAP_HZ, fed_hz)
    return {
        "method": method, "phase": "rate", "backend": args.backend, "trigger": "timer",
        "inference_rate_hz": RATE_CAP_HZ, "image": "2 x 96x96 rgb8", "feed_hz": round(fed_hz, 1),
        "n": chunks, "chunk_rate_hz": chunk_rate, "forward_ms_p50": forward, "engine_limit_hz": 1000.0 / forward,
        "binding_limit_hz": limit, "rate_ratio": chunk_rate / limit,
    }  # fmt: skip


def measure(
    probe: Probe, method: str, artifact: Path, args: argparse.Namespace, log: Path, cycles: int, feed_hz: float
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """Both phases for one artifact: (latency row, rate row), latencies and overheads in ms."""
    proc = start_node(artifact, args.backend, log)
    try:
        latency_row, total, overhead = latency_phase(probe, method, args, log, cycles, feed_hz)
        return [latency_row, rate_phase(probe, method, args)], total, overhead
    finally:
        stop(proc)


def measure_floor(probe: Probe, args: argparse.Namespace, log: Path) -> tuple[dict, np.ndarray]:
    """The latency phase through the no-work node: (row, latencies ms)."""
    proc = start_floor(log)
    try:
        row, total, _ = latency_phase(probe, "transport floor", args, log, args.cycles, args.feed_hz)
        return row, total
    finally:
        stop(proc)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from sdm_controller.bench.machine import describe_machine
    from sdm_controller.bench.untrained_artifact import write_untrained_artifact

    workdir = Path(tempfile.mkdtemp(prefix="node_latency_"))
    probe = Probe()
    rows: list[dict] = []
    series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        floor_row, floor = measure_floor(probe, args, workdir / "floor.log")
        plan = (("one-step", True, args.cycles, args.feed_hz),
                ("teacher-ddim10", False, args.teacher_cycles, args.teacher_feed_hz))
        for method, one_step, cycles, feed_hz in plan:
            artifact = write_untrained_artifact(workdir / method, cameras=CAMERAS, image_size=(96, 96),
                                                one_step=one_step, image_encoder=args.encoder)
            log = workdir / f"{method}.log"
            new_rows, total, overhead = measure(probe, method, artifact, args, log, cycles, feed_hz)
            rows += new_rows
            series[method] = (total, overhead)
    finally:
        probe.close()
    result = {
        "machine": describe_machine(),
        "command": "python -m sdm_controller.bench.node_latency " + " ".join(sys.argv[1:] if argv is None else argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "artifact": f"untrained test artifacts: 2 cameras 96x96, {args.encoder} encoder, tiny UNet "
                    "(sdm_controller.bench.untrained_artifact)",
        "rows": rows,
        "transport_floor": floor_row,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(series, floor, args.out.with_suffix(".png"))
    print(f"{'method':>15} {'n':>5} {'total p50/p99 ms':>17} {'engine p50':>10} {'overhead p50/p99 ms':>20} "
          f"{'chunk Hz':>8} {'limit Hz':>8} {'ratio':>6}")
    for latency, rate in zip(rows[::2], rows[1::2], strict=True):
        print(f"{latency['method']:>15} {latency['n']:>5} {latency['p50_ms']:>8.2f}/{latency['p99_ms']:<8.2f} "
              f"{latency['engine_p50_ms']:>10.2f} "
              f"{latency['overhead_p50_ms']:>10.2f}/{latency['overhead_p99_ms']:<9.2f} "
              f"{rate['chunk_rate_hz']:>8.1f} {rate['binding_limit_hz']:>8.1f} {rate['rate_ratio']:>6.2f}")
    print(f"{floor_row['method']:>15} {floor_row['n']:>5} {floor_row['p50_ms']:>8.2f}/{floor_row['p99_ms']:<8.2f} "
          f"{'0':>10} {floor_row['overhead_p50_ms']:>10.2f}/{floor_row['overhead_p99_ms']:<9.2f}   (a node that "
          "does no work: rclpy + DDS between two Python processes)")
    return 0


def plot(series: dict[str, tuple[np.ndarray, np.ndarray]], floor: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for method, (total, overhead) in series.items():
        axes[0].hist(total, bins=60, alpha=0.6, label=method)
        axes[1].hist(overhead, bins=60, alpha=0.6, label=method)
    axes[1].hist(floor, bins=60, alpha=0.6, label="transport floor (no-work node)")
    axes[0].set_xlabel("image publish → chunk received (ms)")
    axes[1].set_xlabel("overhead = that − engine time of the chunk (ms)")
    for ax in axes:
        ax.set_ylabel("chunks")
        ax.legend()
    fig.suptitle("policy_node latency over DDS (trigger: observation)")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
