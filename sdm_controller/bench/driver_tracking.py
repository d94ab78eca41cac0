"""Tracking error of franky motion types streaming the same action chunks against franky-sim.

    OMP_NUM_THREADS=1 .venv/bin/python -m sdm_controller.bench.driver_tracking          # ~2.5 min on 2 cores

A policy-like sender publishes a chunk every 100 ms: 8 points 0.1 s apart, stamped 30 ms in the
past (the observation's age), positions from a smooth reference (``q0 + A (1 - cos 2 pi f t)`` on
five joints) and finite-difference knot velocities with the last one zero (as ``policy_node``
sends them). Each motion type executes the same chunk sequence, sampled through the driver's
own :class:`~sdm_controller.driver.chunk_tracker.TimedChunk` (latency compensation, past points
skipped, a new chunk joined to the running trajectory):

* ``velocity-stream``: the driver's stack (``DriverCore`` + ``FrankyLink`` + ``ControlLoop``):
  ``JointVelocityWaypointMotion`` sent asynchronously each period, velocity = feed-forward +
  gain x position error, clamped to the velocity/acceleration/position limits;
* ``impedance-tracker``: ``franky.JointImpedanceTracker`` (torque control) with the trajectory's
  position and velocity as its target each period;
* ``waypoint-resend``: a ``JointWaypointMotion`` to the trajectory's (position, velocity) a
  lookahead ahead, re-sent asynchronously each period (franky preempts and replans).

Per method: RMS and max of ``q_measured(t) - q_reference(t)`` over the moving joints after a
0.5 s start, the lag (the time shift of the reference that minimises the RMS), the simulator's
real-time factor (simulated / wall seconds: franky-sim's Python loop runs slower than real time
on a loaded machine, which every method pays for) and the largest change of the streamed command
between two periods. Each method runs ``--repeats`` times, interleaved (the load of a shared
machine drifts), each on a freshly started simulator, after one discarded warm-up run; the
``summary`` gives the medians. Writes ``benchmarks/results/driver_tracking.json`` (DESIGN's
results format) and a PNG.

The result chose the driver's motion type: velocity streaming tracks with the smallest error and
lag (re-sent position waypoints overshoot until the arm is thrown off; the impedance tracker lags
about twice as much and is torque control, which needs a good model on the real arm).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from sdm_controller.common.fr3 import FR3_ARM_JOINTS
from sdm_controller.control.chunk import finite_difference_velocities
from sdm_controller.driver.chunk_tracker import ChunkRules, TimedChunk, parse_chunk
from sdm_controller.driver.sim_process import SimProcess

REPO = Path(__file__).resolve().parents[2]
NS = 1_000_000_000
AMPLITUDE = np.array([0.2, 0.2, 0.0, 0.2, 0.0, 0.2, 0.2])
CHUNK_POINTS, CHUNK_PERIOD_NS, CHUNK_RATE_HZ, OBSERVATION_AGE_NS = 8, 100_000_000, 10.0, 30_000_000
METHODS = ("velocity-stream", "impedance-tracker", "waypoint-resend")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hostname", default="127.0.0.37")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the reference motion per method")
    parser.add_argument("--frequency", type=float, default=0.4, help="reference frequency (Hz)")
    parser.add_argument("--rate-hz", type=float, default=200.0, help="command rate of every method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (interleaved: load varies)")
    parser.add_argument(
        "--warmup-seconds",
        type=float,
        default=2.0,
        help="a discarded first run (the first simulator after start-up runs markedly slower than later ones)",
    )
    parser.add_argument(
        "--position-gain", type=float, default=None, help="velocity-stream feedback gain (default: the driver's)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "driver_tracking.json")
    return parser.parse_args(argv)


class Reference:
    """``q0 + A (1 - cos 2 pi f (t - t0))``: starts and ends at rest, peak speed 2 pi f A."""

    def __init__(self, q0: np.ndarray, t0_ns: int, frequency: float, seconds: float) -> None:
        self.q0, self.t0_ns, self.frequency = q0, t0_ns, frequency
        self.end_ns = t0_ns + round(seconds * NS)

    def __call__(self, t_ns: np.ndarray) -> np.ndarray:
        t = np.clip((np.asarray(t_ns, dtype=np.float64) - self.t0_ns) / NS, 0.0, (self.end_ns - self.t0_ns) / NS)
        return self.q0 + AMPLITUDE * (1.0 - np.cos(2 * np.pi * self.frequency * t))[..., None]


class ChunkSender(threading.Thread):
    """Calls ``deliver(stamp, names, offsets, positions, velocities, now)`` at 10 Hz until the reference ends."""

    def __init__(self, reference: Reference, deliver) -> None:
        super().__init__(daemon=True)
        self.reference, self.deliver = reference, deliver

    def run(self) -> None:
        offsets = (np.arange(CHUNK_POINTS) + 1) * CHUNK_PERIOD_NS
        while time.time_ns() < self.reference.end_ns + 0.5 * NS:
            stamp = time.time_ns() - OBSERVATION_AGE_NS
            positions = self.reference(stamp + offsets)
            velocities = finite_difference_velocities(positions, CHUNK_PERIOD_NS / NS)
            self.deliver(stamp, list(FR3_ARM_JOINTS), offsets, positions, velocities, time.time_ns())
            time.sleep(1.0 / CHUNK_RATE_HZ)


class ChunkFollower:
    """The trajectory the newest chunk gives (the driver's tracker without its limits): for the
    motion types that take positions."""

    def __init__(self, q0: np.ndarray) -> None:
        self.lock = threading.Lock()
        self.trajectory = None
        self.q0 = q0

    def deliver(self, stamp, names, offsets, positions, velocities, now) -> None:
        chunk: TimedChunk = parse_chunk(stamp, names, offsets, positions, velocities, now, ChunkRules())
        with self.lock:
            if self.trajectory is None:
                q, dq = self.q0, np.zeros(7)
            else:
                q, dq = self.trajectory.sample(now)
            self.trajectory, _ = chunk.trajectory_from(now, q, dq)

    def sample(self, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        with self.lock:
            if self.trajectory is None:
                return self.q0.copy(), np.zeros(7)
            return self.trajectory.sample(t_ns)


def run_velocity_stream(host: str, args, q0: np.ndarray, reference_start) -> dict:
    from sdm_controller.driver.control_loop import ControlLoop
    from sdm_controller.driver.core import DriverCore
    from sdm_controller.driver.franky_link import FrankyLink
    from sdm_controller.driver.settings import DriverSettings

    settings = DriverSettings(robot_ip=host, control_rate_hz=args.rate_hz, watchdog_ms=300.0)
    if args.position_gain is not None:
        settings = settings.updated({"position_gain": args.position_gain})
    core = DriverCore(settings)
    link = FrankyLink(host, gripper=False)
    log: list = []
    loop = ControlLoop(link, core, time.time_ns, on_sample=lambda s, c: log.append((s.stamp_ns, s.q, c.velocity)))
    loop.connect_once()
    loop.start()
    time.sleep(0.3)
    reference = reference_start()
    sim_start = (time.time_ns(), link.robot.state.time.to_sec())
    ChunkSender(reference, core.offer_chunk).run()
    sim_end = (time.time_ns(), link.robot.state.time.to_sec())
    loop.stop()
    stamps = np.array([row[0] for row in log])
    return {
        "stamps": stamps,
        "q": np.array([row[1] for row in log]),
        "command": np.array([row[2] for row in log]),
        "reference": reference,
        "sim": (sim_start, sim_end),
    }


def run_position_type(host: str, args, q0: np.ndarray, reference_start, kind: str) -> dict:
    import franky

    robot = franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore)
    robot.relative_dynamics_factor = 0.5
    follower = ChunkFollower(np.array(robot.current_joint_positions))
    period = 1.0 / args.rate_hz
    lookahead_ns = 15_000_000
    log: list = []
    reference = reference_start()
    sender = ChunkSender(reference, follower.deliver)
    sim_start = (time.time_ns(), robot.state.time.to_sec())
    tracker = None
    error = None
    if kind == "impedance-tracker":
        stiffness = [600.0, 600.0, 600.0, 600.0, 250.0, 150.0, 50.0]
        tracker = franky.JointImpedanceTracker(robot, stiffness=stiffness, period=period)
    sender.start()
    deadline = time.perf_counter()
    while sender.is_alive():
        now = time.time_ns()
        state = robot.current_joint_state
        if kind == "impedance-tracker":
            q_d, dq_d = follower.sample(now)
            tracker.set_target(q_d, dq_d)
            command = q_d
        else:
            q_d, dq_d = follower.sample(now + lookahead_ns)
            waypoint = franky.JointWaypoint(franky.JointState(q_d, dq_d))
            try:
                robot.move(franky.JointWaypointMotion([waypoint], return_when_finished=False), asynchronous=True)
            except Exception as exc:  # noqa: BLE001 - the planner gives up once the arm is far off
                error = f"{type(exc).__name__}: {exc}"
                break
            command = q_d
        log.append((now, np.array(state.position), command))
        deadline += period
        time.sleep(max(0.0, deadline - time.perf_counter()))
    sim_end = (time.time_ns(), robot.state.time.to_sec())
    sender.join()
    if tracker is not None:
        tracker.stop()
    else:
        with contextlib.suppress(Exception):
            robot.stop()
    stamps = np.array([row[0] for row in log])
    return {
        "stamps": stamps,
        "q": np.array([row[1] for row in log]),
        "command": np.array([row[2] for row in log]),
        "reference": reference,
        "sim": (sim_start, sim_end),
        "error": error,
    }


def score(run: dict, method: str) -> dict:
    reference: Reference = run["reference"]
    stamps, q = run["stamps"], run["q"]
    window = (stamps > reference.t0_ns + 0.5 * NS) & (stamps < reference.end_ns)
    moving = AMPLITUDE > 0
    error = (q[window] - reference(stamps[window]))[:, moving]
    shifts_ms = np.arange(0, 201, 1)
    rms_by_shift = [
        np.sqrt(np.mean((q[window] - reference(stamps[window] - s * 1_000_000))[:, moving] ** 2)) for s in shifts_ms
    ]
    (wall0, sim0), (wall1, sim1) = run["sim"]
    periods = np.diff(stamps) / 1e6
    steps = np.abs(np.diff(run["command"], axis=0))
    return {
        "task": "fr3-chunk-tracking",
        "method": method,
        "rms_rad": float(np.sqrt(np.mean(error**2))),
        "max_rad": float(np.max(np.abs(error))),
        "lag_ms": float(shifts_ms[int(np.argmin(rms_by_shift))]),
        "rms_at_lag_rad": float(np.min(rms_by_shift)),
        "max_command_step": float(np.max(steps)) if len(steps) else 0.0,
        "real_time_factor": float((sim1 - sim0) / ((wall1 - wall0) / NS)),
        "period_p50_ms": float(np.median(periods)),
        "period_p99_ms": float(np.percentile(periods, 99)),
        "frequency_hz": None,
        "peak_speed_rad_s": None,
        "n": int(np.count_nonzero(window)),
        "error": run.get("error"),
    }


def plot(runs: dict, summary: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for method, run in runs.items():
        reference, stamps = run["reference"], run["stamps"]
        t = (stamps - reference.t0_ns) / NS
        axes[0].plot(t, (run["q"] - reference(stamps))[:, 0], label=method, lw=1)
    axes[0].set_ylim(-0.03, 0.03)  # re-sent waypoints leave this range within a second
    axes[0].set_xlabel("time since the reference started (s)")
    axes[0].set_ylabel("fr3_joint1 error (rad), first run of each")
    axes[0].axhline(0, color="k", lw=0.5)
    axes[0].legend(loc="lower left")
    x = np.arange(len(summary))
    axes[1].bar(x - 0.2, [row["median_rms_rad"] for row in summary], 0.4, label="RMS")
    axes[1].bar(x + 0.2, [row["median_max_rad"] for row in summary], 0.4, label="max")
    for i, row in enumerate(summary):
        label = f"lag {row['median_lag_ms']:.0f} ms\nsim {row['median_real_time_factor']:.2f}x"
        axes[1].text(i, row["median_max_rad"] * 1.15, label, ha="center", va="bottom", fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_ylim(top=max(row["median_max_rad"] for row in summary) * 5)
    axes[1].set_xticks(x, [row["method"] for row in summary])
    axes[1].set_ylabel(f"tracking error (rad), median of {summary[0]['runs']} runs")
    axes[1].legend(loc="upper left")
    fig.suptitle("franky motion types streaming the same 10 Hz action chunks against franky-sim")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _q0(host: str) -> np.ndarray:
    import franky

    return np.array(franky.Robot(host, realtime_config=franky.RealtimeConfig.Ignore).current_joint_positions)


def summarize(rows: list[dict]) -> list[dict]:
    """Median of each method's runs, best (lowest median RMS) first."""
    out = []
    for method in dict.fromkeys(row["method"] for row in rows):
        mine = [row for row in rows if row["method"] == method]
        out.append(
            {
                "method": method,
                "runs": len(mine),
                **{
                    f"median_{key}": float(np.median([row[key] for row in mine]))
                    for key in ("rms_rad", "max_rad", "lag_ms", "real_time_factor")
                },
            }
        )
    return sorted(out, key=lambda row: row["median_rms_rad"])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from sdm_controller.bench.machine import describe_machine

    runs, rows = {}, []
    with SimProcess(args.hostname) as sim:
        if args.warmup_seconds > 0:
            sim.restart()
            warm = argparse.Namespace(**{**vars(args), "seconds": args.warmup_seconds})
            q0 = _q0(args.hostname)
            run_velocity_stream(
                args.hostname, warm, q0, lambda: Reference(q0, time.time_ns(), args.frequency, args.warmup_seconds)
            )
        for repeat, method in ((r, m) for r in range(args.repeats) for m in args.methods):
            sim.restart()  # every method starts from the same state, and a fresh motion type
            q0 = _q0(args.hostname)

            def reference_start(q0=q0):
                return Reference(q0, time.time_ns() + NS // 5, args.frequency, args.seconds)

            if method == "velocity-stream":
                run = run_velocity_stream(args.hostname, args, q0, reference_start)
            else:
                run = run_position_type(args.hostname, args, q0, reference_start, method)
            runs.setdefault(method, run)
            row = score(run, method)
            row.update(
                repeat=repeat,
                frequency_hz=args.frequency,
                peak_speed_rad_s=float(2 * np.pi * args.frequency * AMPLITUDE.max()),
                rate_hz=args.rate_hz,
                load_average_1min=os.getloadavg()[0],
            )
            rows.append(row)
            print(json.dumps(row))
    command = "OMP_NUM_THREADS=1 python -m sdm_controller.bench.driver_tracking"
    command += "" if argv is None else " " + " ".join(argv)
    result = {
        "machine": describe_machine(),
        "command": command,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "chunk_points": CHUNK_POINTS,
            "chunk_period_s": CHUNK_PERIOD_NS / NS,
            "chunk_rate_hz": CHUNK_RATE_HZ,
            "observation_age_s": OBSERVATION_AGE_NS / NS,
            "amplitude_rad": AMPLITUDE.tolist(),
            "seconds": args.seconds,
        },
        "summary": summarize(rows),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(runs, result["summary"], args.out.with_suffix(".png"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
