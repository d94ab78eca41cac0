"""End-to-end latency of policy_node over DDS: observation stamp → chunk received, and engine time.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/node_latency.py --seconds 30 \
        --out benchmarks/results/node_latency.json

Starts ``policy_node`` as its own process on an artifact (default: an untrained test artifact with
two 96x96 cameras, see ``sdm_controller.control.test_artifacts``), publishes two 640x480 bgr8
camera streams and FR3 joint states at ``--feed-hz`` from this process, and measures per chunk the
time from its ``header.stamp`` (the newest observation it used) to its arrival here: image
transport + resize + waiting for the next cycle + inference + publish. The engine's own time per
call is read from the node's ``/diagnostics``. Writes the results JSON (DESIGN's benchmark format)
and a PNG beside it.

DDS discovery is pinned to this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) on a private
domain, whatever the calling shell says.
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

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", help="artifact folder (default: an untrained 2-camera test artifact)")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rate-hz", type=float, default=10.0, help="inference_rate_hz of the node")
    parser.add_argument("--feed-hz", type=float, default=30.0, help="camera and joint state rate")
    parser.add_argument("--seconds", type=float, default=30.0, help="measurement time after warm-up")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "node_latency.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image, JointState
    from trajectory_msgs.msg import JointTrajectory

    from sdm_controller.bench.machine import describe_machine
    from sdm_controller.control.test_artifacts import FR3_JOINTS, make_test_artifact

    workdir = Path(tempfile.mkdtemp(prefix="node_latency_"))
    artifact = Path(args.artifact) if args.artifact else make_test_artifact(
        workdir / "artifact", cameras=("wrist", "scene"), image_size=(96, 96))
    log = (workdir / "policy_node.log").open("w")
    node_proc = subprocess.Popen(
        [sys.executable, "-m", "sdm_controller.ros.policy_node", "--ros-args", "-p", f"artifact:={artifact}",
         "-p", f"backend:={args.backend}", "-p", f"device:={args.device}", "-p", f"inference_rate_hz:={args.rate_hz}"],
        cwd=REPO, env=dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")),
        stdout=log, stderr=subprocess.STDOUT,
    )
    rclpy.init()
    node = Node("node_latency_bench")
    latencies: list[float] = []
    diagnostics: dict[str, str] = {}
    measuring = threading.Event()

    def on_chunk(msg: JointTrajectory) -> None:
        if measuring.is_set():
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
            latencies.append((node.get_clock().now().nanoseconds - stamp) / 1e6)

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name == "policy_node: policy":
                diagnostics.update({kv.key: kv.value for kv in status.values})

    node.create_subscription(JointTrajectory, "action_chunk", on_chunk, 50)
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    image_pubs = [node.create_publisher(Image, f"{c}/image_raw", 10) for c in ("wrist", "scene")]
    joint_pub = node.create_publisher(JointState, "joint_states", 10)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    pixels = np.random.default_rng(0).integers(0, 256, 480 * 640 * 3, dtype=np.uint8).tobytes()
    names = list(FR3_JOINTS)
    home = [0.0, 0.0, 0.0, -1.5, 0.0, 1.8, 0.0, 0.02]
    try:
        start = time.monotonic()
        warmup_s = 20.0  # node start, engine load, first chunks
        while time.monotonic() - start < warmup_s + args.seconds:
            if time.monotonic() - start > warmup_s and diagnostics.get("state") == "published":
                measuring.set()
            stamp = node.get_clock().now().to_msg()
            for pub in image_pubs:
                msg = Image(height=480, width=640, encoding="bgr8", step=640 * 3, data=pixels)
                msg.header.stamp = stamp
                pub.publish(msg)
            joints = JointState(name=names, position=home)
            joints.header.stamp = stamp
            joint_pub.publish(joints)
            time.sleep(1.0 / args.feed_hz)
    finally:
        executor.shutdown()
        spinner.join(5)
        node.destroy_node()
        rclpy.try_shutdown()
        node_proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(15)
        except subprocess.TimeoutExpired:
            node_proc.kill()
        log.close()
    if not latencies:
        print(f"no chunks measured; node log: {workdir / 'policy_node.log'}", file=sys.stderr)
        return 1
    p50, p99 = np.percentile(latencies, [50, 99])
    backend = diagnostics.get("backend", args.backend)
    rows = [
        {"backend": backend, "method": "node-obs-to-chunk", "p50_ms": float(p50), "p99_ms": float(p99),
         "n": len(latencies), "inference_rate_hz": args.rate_hz, "feed_hz": args.feed_hz, "image": "640x480 bgr8"},
        {"backend": backend, "method": "engine", "p50_ms": float(diagnostics.get("inference latency_p50_ms", "nan")),
         "p99_ms": float(diagnostics.get("inference latency_p99_ms", "nan")),
         "n": min(200, int(diagnostics.get("chunks published", 0))),  # the node keeps the last 200 calls
         "chunk_rate_hz": float(diagnostics.get("chunk rate_hz", "nan"))},
    ]
    result = {
        "machine": describe_machine(),
        "command": "python benchmarks/node_latency.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "artifact": str(artifact) if args.artifact else "untrained test artifact, 2 cameras 96x96, tiny UNet",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    plot(rows, args.out.with_suffix(".png"))
    for row in rows:
        print(f"{row['method']:>18}: p50 {row['p50_ms']:.1f} ms  p99 {row['p99_ms']:.1f} ms  (n={row['n']})")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["p50_ms"] for r in rows], 0.4, label="p50")
    ax.bar(x + 0.2, [r["p99_ms"] for r in rows], 0.4, label="p99")
    ax.set_xticks(x, [f"{r['method']}\n({r['backend']})" for r in rows])
    ax.set_ylabel("ms")
    ax.set_title("policy_node latency")
    ax.legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
