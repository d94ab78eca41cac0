"""The franka driver's ROS-free core: chunk validation and timing, Hermite sampling, command
limits, the watchdog and the control decisions, against a simulated ideal velocity-controlled
arm (no franky, no ROS; fast)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sdm_controller.common.fr3 import (
    ARM_ACCELERATION,
    ARM_LOWER,
    ARM_UPPER,
    ARM_VELOCITY,
    FR3_ARM_JOINTS,
    FR3_GRIPPER_JOINT,
)
from sdm_controller.control.settings import SettingsError
from sdm_controller.driver.chunk_tracker import ChunkRejected, ChunkRules, Trajectory, parse_chunk
from sdm_controller.driver.command_limits import CommandClamps, CommandLimits
from sdm_controller.driver.core import HOLD, IDLE, TRACKING, DriverCore
from sdm_controller.driver.settings import DriverSettings
from sdm_controller.driver.watchdog import Watchdog

MS = 1_000_000
NS = 1_000_000_000
HOME = np.array([0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785])
NAMES = list(FR3_ARM_JOINTS)
T0 = 1_000 * NS  # an arbitrary "now" for the driver clock


def chunk_args(positions, stamp=T0, period_ns=100 * MS, names=NAMES, velocities=None):
    positions = np.asarray(positions, dtype=float)
    offsets = [(k + 1) * period_ns for k in range(len(positions))]
    velocities = [[] for _ in positions] if velocities is None else np.asarray(velocities).tolist()
    return stamp, list(names), offsets, positions.tolist(), velocities


def line(n=8, step=0.01, joint=0, start=HOME):
    rows = np.repeat(start[None], n, axis=0)
    rows[:, joint] += step * (np.arange(n) + 1)
    return rows


# -- chunk_tracker ----------------------------------------------------------------------------------
def test_hermite_passes_knots_with_their_velocities_and_rests_outside():
    times = np.array([0, 100, 300]) * MS
    q = np.array([[0.0] * 7, [1.0] * 7, [0.5] * 7])
    dq = np.array([[0.0] * 7, [2.0] * 7, [0.0] * 7])
    traj = Trajectory(times, q, dq)
    for t, qk, dqk in zip(times[:-1], q, dq, strict=False):
        pos, vel = traj.sample(int(t))
        np.testing.assert_allclose(pos, qk, atol=1e-12)
        np.testing.assert_allclose(vel, dqk, atol=1e-9)
    pos, vel = traj.sample(int(100 * MS - 1))  # continuous velocity across a knot
    np.testing.assert_allclose(vel, 2.0, atol=1e-3)
    pos, vel = traj.sample(int(1e9))
    np.testing.assert_allclose(pos, 0.5) and np.testing.assert_allclose(vel, 0.0)
    pos, vel = traj.sample(-5)
    np.testing.assert_allclose(pos, 0.0) and np.testing.assert_allclose(vel, 0.0)
    # numerical derivative of the position matches the sampled velocity
    t = 170 * MS
    fd = (traj.sample(t + 1000)[0] - traj.sample(t - 1000)[0]) / 2e-6
    np.testing.assert_allclose(traj.sample(t)[1], fd, rtol=1e-4)


def test_joint_names_map_in_any_order_with_gripper():
    rows = line()
    order = [*reversed(NAMES), FR3_GRIPPER_JOINT, "fr3_finger_joint2"]
    with_finger = np.hstack([rows[:, ::-1], np.full((8, 1), 0.03), np.full((8, 1), 0.03)])
    chunk = parse_chunk(*chunk_args(with_finger, names=order), now_ns=T0)
    np.testing.assert_allclose(chunk.q, rows)
    np.testing.assert_allclose(chunk.finger, 0.03)
    assert chunk.times_ns[0] == T0 + 100 * MS
    # no velocities given: finite differences, last one zero
    np.testing.assert_allclose(chunk.dq[1:-1, 0], 0.1, atol=1e-9)
    assert np.all(chunk.dq[-1] == 0)
    assert parse_chunk(*chunk_args(rows), now_ns=T0).finger is None


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda a: (a[0], NAMES[:6] + ["elbow"], *a[2:]), "joint_names"),
        (lambda a: (a[0], NAMES[:6] + [NAMES[0]], *a[2:]), "joint_names"),
        (lambda a: (a[0], a[1], a[2][:1], a[3][:1], a[4][:1]), "too_few_points"),
        (lambda a: (a[0], a[1], a[2], [[math.nan] * 7] + a[3][1:], a[4]), "non_finite"),
        (lambda a: (a[0], a[1], a[2], a[3], [[1.0] * 7] * 7 + [[math.inf] * 7]), "non_finite"),
        (lambda a: (a[0], a[1], a[2], [row[:6] for row in a[3]], a[4]), "malformed"),
        (lambda a: (a[0], a[1], a[2][::-1], a[3], a[4]), "timing"),
        (lambda a: (a[0] - 2 * NS, *a[1:]), "stamp_past"),
        (lambda a: (a[0] + NS, *a[1:]), "stamp_future"),
        (lambda a: (a[0] - 900 * MS, *a[1:]), "all_points_past"),
    ],
)
def test_bad_chunks_are_rejected_with_a_reason(mutate, reason):
    args = mutate(chunk_args(line()))
    with pytest.raises(ChunkRejected) as info:
        parse_chunk(*args, now_ns=T0, rules=ChunkRules())
    assert info.value.reason == reason
    assert str(info.value)  # a sentence for the diagnostics


def test_past_points_are_skipped_and_the_trajectory_starts_at_the_commanded_state():
    rows = line()
    stamp = T0 - 350 * MS  # points due at -250, -150, -50, +50, ... ms
    chunk = parse_chunk(*chunk_args(rows, stamp=stamp), now_ns=T0)
    q0, dq0 = HOME + 0.005, np.full(7, 0.1)
    traj, skipped = chunk.trajectory_from(T0, q0, dq0)
    assert skipped == 3
    assert traj.times_ns[0] == T0 and traj.times_ns[1] == stamp + 400 * MS
    np.testing.assert_allclose(traj.sample(T0)[0], q0) and np.testing.assert_allclose(traj.sample(T0)[1], dq0)
    np.testing.assert_allclose(traj.sample(stamp + 500 * MS)[0], rows[4])  # point 4 when it is due


# -- command_limits ---------------------------------------------------------------------------------
def test_velocity_acceleration_and_braking_clamps():
    limits = CommandLimits()
    clamps = CommandClamps()
    dt = 0.005
    v = limits.clamp_velocity(np.full(7, 100.0), np.zeros(7), HOME, dt, 0.5, 1.0, clamps)
    np.testing.assert_allclose(v, ARM_ACCELERATION * dt)  # acceleration from rest
    v = limits.clamp_velocity(np.full(7, 100.0), np.full(7, 10.0), HOME, dt, 0.5, 1.0, clamps)
    np.testing.assert_allclose(v[:4], np.minimum(ARM_VELOCITY * 0.5, 10.0)[:4])
    assert clamps.velocity > 0 and clamps.acceleration > 0
    # near the upper limit: no faster than what stops at limit - margin
    q = ARM_UPPER - limits.margin - 0.01
    v = limits.clamp_velocity(np.full(7, 100.0), np.full(7, 10.0), q, dt, 1.0, 1.0, clamps)
    np.testing.assert_allclose(v, np.sqrt(2 * ARM_ACCELERATION * 0.01))
    # beyond it: only back inside
    q = ARM_UPPER + 0.01
    v = limits.clamp_velocity(np.full(7, 1.0), np.zeros(7), q, dt, 1.0, 1.0, clamps)
    assert np.all(v <= 0)
    inside = limits.clamp_position(ARM_LOWER - 1.0, clamps)
    np.testing.assert_allclose(inside, ARM_LOWER + limits.margin)


def test_settings_refuse_limits_beyond_the_datasheet_and_wrong_lengths():
    settings = DriverSettings(robot_ip="x")
    with pytest.raises(SettingsError, match="joint_velocity_limit"):
        settings.updated({"joint_velocity_limit": [10.0] * 7})
    with pytest.raises(SettingsError, match="7"):
        settings.updated({"joint_acceleration_limit": [1.0] * 6})
    with pytest.raises(SettingsError, match="joint_position_lower"):
        settings.updated({"joint_position_lower": [-5.0] * 7})
    with pytest.raises(SettingsError, match="dynamics_factor"):
        settings.updated({"dynamics_factor": 1.5})
    tighter = settings.updated({"joint_velocity_limit": [0.5] * 7, "dynamics_factor": 0.2})
    np.testing.assert_allclose(tighter.limits().velocity, 0.5)


def test_watchdog():
    dog = Watchdog(200 * MS)
    assert dog.expired(0)
    dog.feed(T0)
    assert not dog.expired(T0 + 200 * MS) and dog.expired(T0 + 201 * MS)


# -- core against an ideal velocity-controlled arm ----------------------------------------------------
class Arm:
    """q follows the commanded velocity after a fixed lag (like franky's velocity tracking)."""

    def __init__(self, q=HOME, lag_steps=2):
        self.q = np.array(q, dtype=float)
        self.pending = [np.zeros(7)] * lag_steps

    def step(self, v, dt):
        self.pending.append(v)
        applied = self.pending.pop(0)
        self.q = self.q + applied * dt
        return applied


def run(core, arm, t_start, seconds, dt=0.005, send=None):
    """Step the core for ``seconds``; ``send(t)`` may offer chunks. Returns time, q, commanded v, mode."""
    rows = []
    t = t_start
    for _ in range(round(seconds / dt)):
        if send is not None:
            send(t)
        command = core.step(t, arm.q, np.zeros(7))
        arm.step(command.velocity, dt)
        rows.append((t, arm.q.copy(), command.velocity.copy(), command.mode, command.stream))
        t += round(dt * NS)
    return rows


def reference(t_ns, t0):
    s = np.maximum((np.asarray(t_ns, dtype=float) - t0) / NS, 0.0)
    return HOME + np.array([0.2, 0.2, 0, 0.2, 0, 0.2, 0.2]) * (1 - np.cos(2 * np.pi * 0.4 * s))[..., None]


def policy(core, t0, every_ms=100, age_ms=30, until=None):
    """Offers a chunk of the reference every ``every_ms`` (stamped ``age_ms`` ago), like policy_node."""
    state = {"next": t0}

    def send(t):
        if t >= state["next"] and (until is None or t < until):
            send.last = t
            stamp = t - age_ms * MS
            offsets = (np.arange(8) + 1) * 100 * MS
            positions = reference(stamp + offsets, t0)
            assert core.offer_chunk(stamp, NAMES, offsets, positions, [[]] * 8, t) is None
            state["next"] = t + every_ms * MS

    return send


def make_core(**changes):
    return DriverCore(DriverSettings(robot_ip="sim").updated({"watchdog_ms": 200.0, **changes}))


def test_tracks_a_streamed_chunk_sequence_with_smooth_replacement():
    core, arm = make_core(), Arm()
    core.step(T0 - 5 * MS, arm.q, np.zeros(7))
    rows = run(core, arm, T0, 3.0, send=policy(core, T0))
    t = np.array([r[0] for r in rows])
    q = np.array([r[1] for r in rows])
    v = np.array([r[2] for r in rows])
    moving = t > T0 + 300 * MS
    error = q[moving] - reference(t[moving], T0)
    assert np.sqrt(np.mean(error**2)) < 0.005 and np.max(np.abs(error)) < 0.02
    assert core.replaced >= 25
    # no jump in commanded velocity, at replacements included: bounded by the scaled acceleration
    bound = ARM_ACCELERATION * core.settings.dynamics_factor * 0.005 + 1e-9
    assert np.all(np.abs(np.diff(v, axis=0)) <= bound)


def test_watchdog_brakes_to_rest_and_stops_streaming():
    core, arm = make_core(), Arm()
    core.step(T0 - 5 * MS, arm.q, np.zeros(7))
    sender = policy(core, T0, until=T0 + 1000 * MS)
    rows = run(core, arm, T0, 2.0, send=sender)
    last_chunk = sender.last
    t = np.array([r[0] for r in rows])
    v = np.array([r[2] for r in rows])
    modes = [r[3] for r in rows]
    assert np.max(np.abs(v[(t > last_chunk - 200 * MS) & (t <= last_chunk)])) > 0.2  # moving when it stopped
    # the command is at rest watchdog_ms after the last chunk, within one control period
    still = t >= last_chunk + 200 * MS + 5 * MS
    assert np.all(v[still] == 0) and all(m == HOLD for m, s in zip(modes, still, strict=True) if s)
    assert not rows[-1][4]  # at rest: nothing streamed
    assert core.watchdog.trips == 1 and "watchdog" in core.hold_reason


def test_rejected_chunk_makes_the_arm_hold():
    core, arm = make_core(), Arm()
    core.step(T0 - 5 * MS, arm.q, np.zeros(7))
    run(core, arm, T0, 0.5, send=policy(core, T0))
    assert core.mode == TRACKING
    bad = chunk_args(line(), stamp=T0 + 500 * MS)
    bad[3][2][0] = math.nan
    rejected = core.offer_chunk(*bad, now_ns=T0 + 500 * MS)
    assert rejected is not None and rejected.reason == "non_finite"
    rows = run(core, arm, T0 + 500 * MS, 0.3)
    assert core.mode == HOLD and np.all(rows[-1][2] == 0)
    report = dict(core.report(T0).values)
    assert report["rejected non_finite"] == "1" and "NaN" in report["last rejection"]


def test_position_and_velocity_limits_hold_whatever_the_chunk_says():
    core, arm = make_core(dynamics_factor=0.5), Arm()
    core.step(T0 - 5 * MS, arm.q, np.zeros(7))
    target = HOME.copy()
    target[0] = 4.0  # beyond fr3_joint1's 2.74 rad
    target[3] = 0.5  # beyond fr3_joint4's -0.15 rad
    chunk = np.repeat(target[None], 8, axis=0)
    t = T0
    rows = []
    for _ in range(30):  # 3 s of chunks asking for the impossible, as fast as possible
        core.offer_chunk(*chunk_args(chunk, stamp=t, period_ns=10 * MS), now_ns=t)
        rows += run(core, arm, t, 0.1)
        t += 100 * MS
    q = np.array([r[1] for r in rows])
    v = np.array([r[2] for r in rows])
    assert np.all(q <= ARM_UPPER) and np.all(q >= ARM_LOWER)
    assert np.all(np.abs(v) <= ARM_VELOCITY * 0.5 + 1e-9)
    assert q[-1, 0] > ARM_UPPER[0] - 0.1  # got there, and stopped in time
    assert core.clamps.position > 0 and core.clamps.velocity + core.clamps.acceleration > 0


def test_hold_on_request_brakes_to_rest():
    core, arm = make_core(), Arm()
    core.step(T0 - 5 * MS, arm.q, np.zeros(7))
    run(core, arm, T0, 0.6, send=policy(core, T0))
    assert not core.at_rest
    core.hold("driver shutting down")
    rows = run(core, arm, T0 + 600 * MS, 0.3)
    assert core.at_rest and core.mode == HOLD and not rows[-1][4]
    assert np.all(np.abs(np.diff([r[2] for r in rows], axis=0)) <= ARM_ACCELERATION * 0.005 + 1e-9)


def test_a_stop_refuses_every_chunk_until_a_recovery_and_survives_a_reconnect():
    core, arm = make_core(), Arm()
    core.step(T0 - 5 * MS, arm.q, np.zeros(7))
    run(core, arm, T0, 0.6, send=policy(core, T0))
    core.stop("~/stop called")
    t = T0 + 600 * MS

    def offer(t_ns):
        return core.offer_chunk(*chunk_args(line(), stamp=t_ns - 10 * MS), now_ns=t_ns)

    # the policy keeps publishing fresh chunks: each is refused and the arm brakes to rest and stays
    rows = run(core, arm, t, 0.5, send=lambda now: offer(now) if (now - t) % (100 * MS) == 0 else None)
    assert core.at_rest and core.mode == HOLD and core.rejected["stopped"] == 5 and not rows[-1][4]
    assert "~/recover" in core.last_rejection
    core.reset("reconnected", t + 500 * MS)  # a reconnect does not release it
    core.step(t + 505 * MS, arm.q, np.zeros(7))
    assert offer(t + 520 * MS).reason == "stopped" and "stopped" in core.report(t).values[1][1]
    core.reset("recovered from errors", t + 530 * MS, release_stop=True)
    core.step(t + 535 * MS, arm.q, np.zeros(7))
    assert offer(t + 550 * MS) is None and core.mode == TRACKING and not core.stopped


def test_reset_waits_for_a_chunk_stamped_after_it():
    core, arm = make_core(), Arm()
    core.step(T0 - 5 * MS, arm.q, np.zeros(7))
    core.reset("reconnected", T0)
    assert core.offer_chunk(*chunk_args(line()), now_ns=T0).reason == "not_ready"
    core.step(T0 + 5 * MS, arm.q, np.zeros(7))
    stale = core.offer_chunk(*chunk_args(line(), stamp=T0 - 20 * MS), now_ns=T0 + 10 * MS)
    assert stale.reason == "stamp_before_reset"
    assert core.mode == IDLE
    assert core.offer_chunk(*chunk_args(line(), stamp=T0 + 6 * MS), now_ns=T0 + 10 * MS) is None
    assert core.mode == TRACKING


def test_live_dynamics_factor_scales_the_velocity_bound():
    core, arm = make_core(dynamics_factor=1.0), Arm()
    core.step(T0 - 5 * MS, arm.q, np.zeros(7))
    far = HOME.copy()
    far[0] += 2.0
    core.offer_chunk(*chunk_args(np.repeat(far[None], 8, axis=0), period_ns=50 * MS), now_ns=T0)
    rows = run(core, arm, T0, 0.4)
    assert np.max(np.abs([r[2][0] for r in rows])) > 1.0
    core.update_settings(core.settings.updated({"dynamics_factor": 0.1}))
    rows = run(core, arm, T0 + 400 * MS, 0.4)
    assert np.max(np.abs([r[2][0] for r in rows[-10:]])) <= ARM_VELOCITY[0] * 0.1 + 1e-9


def test_robot_limits_cap_every_mode_whatever_the_settings():
    """franky refuses waypoints above its own joint limits (lower than the datasheet for joints 5-7)."""
    franky_velocity = np.array([2.175] * 4 + [2.61] * 3) * 0.98
    core, arm = make_core(dynamics_factor=1.0), Arm()
    core.set_robot_limits(franky_velocity, ARM_ACCELERATION)
    np.testing.assert_allclose(core.limits.velocity, np.minimum(ARM_VELOCITY, franky_velocity))
    core.update_settings(core.settings.updated({"watchdog_ms": 300.0}))  # a live change keeps the cap
    np.testing.assert_allclose(core.limits.velocity, np.minimum(ARM_VELOCITY, franky_velocity))
    core.step(T0 - 5 * MS, arm.q, np.zeros(7))
    far = arm.q.copy()
    far[6] += 2.0  # fr3_joint7 asked for 20 rad/s, then the chunks stop: tracking, braking, hold
    assert core.offer_chunk(*chunk_args(np.repeat(far[None], 8, axis=0), stamp=T0), T0) is None
    rows = run(core, arm, T0, 1.5)
    v = np.array([r[2] for r in rows])
    assert np.max(np.abs(v[:, 6])) > 0.95 * franky_velocity[6]  # it went as fast as allowed
    assert np.all(np.abs(v) <= franky_velocity + 1e-12)
    assert {r[3] for r in rows} >= {TRACKING, HOLD}
    assert "2.558" in dict(core.report(T0).values)["velocity limit effective"]
