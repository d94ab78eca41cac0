"""The recorder's ROS-free core: stamp alignment, refusals, episodes, and appending to datasets.

The streams are simulated on a virtual clock: joints move along a known straight line ``q(t)``
(so linear interpolation is exact), cameras publish uniform frames whose grey value names the
frame, and every message arrives some milliseconds after its stamp, in arrival order.
"""

from __future__ import annotations

import heapq
import time
from pathlib import Path

import numpy as np
import pytest

from sdm_controller.common.fr3 import FR3_JOINTS
from sdm_controller.common.images import RawImage
from sdm_controller.common.rejected import MISSING_JOINTS, RejectedInput
from sdm_controller.data import recording
from sdm_controller.data.episodes import EpisodeSet, load_episodes, save_episodes
from sdm_controller.data.recording import (
    NEXT_STATE,
    NO_ACTION,
    NO_FRAME,
    NO_STATE,
    RECORDED,
    REPEAT,
    SKEW,
    STALE,
    TOPIC,
    EpisodeRecorder,
    RecorderSettings,
    append_episode,
    check_dataset,
    recover_dataset,
)
from sdm_controller.errors import ConfigError, DatasetError

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000  # a wall-clock-like epoch (stamps are large integers)
PERIOD_S = 0.1
Q0 = np.array([0.0, -0.3, 0.1, -2.0, 0.0, 1.8, 0.5, 0.01])
VELOCITY = np.array([0.05, 0.1, -0.05, 0.08, 0.1, -0.06, 0.2, 0.002])  # rad/s, m/s for the finger


def q(t_ns: int | float) -> np.ndarray:
    return Q0 + VELOCITY * (t_ns - T0) / 1e9


def frame_value(index: int) -> int:
    return (7 * index) % 251


def raw_frame(value: int, width: int = 64, height: int = 48) -> RawImage:
    data = np.full(height * width * 3, value, dtype=np.uint8).tobytes()
    return RawImage(height=height, width=width, encoding="rgb8", step=width * 3, data=data)


class Streams:
    """Virtual-time publisher: cameras, joint states and commands, delivered in arrival order."""

    def __init__(
        self,
        rec: EpisodeRecorder,
        cameras: dict[str, tuple[float, float, float]] | None = None,
        joint_hz: float = 200.0,
        command: str | None = None,
        command_hz: float = 50.0,
    ) -> None:
        self.rec = rec
        # camera -> (rate Hz, latency ms, phase ms)
        self.cameras = cameras if cameras is not None else {"front": (30.0, 25.0, 3.0)}
        self.joint_hz = joint_hz
        self.command = command
        self.command_hz = command_hz
        self.frames: dict[str, dict[int, int]] = {c: {} for c in self.cameras}  # value -> stamp
        self.commands: list[tuple[int, np.ndarray]] = []
        self.silent: dict[str, tuple[float, float]] = {}  # stream -> (from s, to s) of virtual time
        self.now = T0

    def _quiet(self, stream: str, t_ns: int) -> bool:
        window = self.silent.get(stream)
        return window is not None and window[0] * 1e9 <= t_ns - T0 < window[1] * 1e9

    def run(
        self, start_s: float, end_s: float, tick_offset_ms: float = 7.0, actions: dict[float, str] | None = None
    ) -> list[recording.SampleResult]:
        """Deliver everything stamped in [start_s, end_s) and tick every PERIOD_S; ``actions`` at times."""
        events: list[tuple[int, int, str, object]] = []
        seq = 0

        def push(arrival: int, kind: str, payload: object) -> None:
            nonlocal seq
            heapq.heappush(events, (arrival, seq, kind, payload))
            seq += 1

        start, end = T0 + int(start_s * 1e9), T0 + int(end_s * 1e9)
        for camera, (hz, latency_ms, phase_ms) in self.cameras.items():
            period = int(1e9 / hz)
            k = max(0, -(-(start - T0 - int(phase_ms * MS)) // period))
            while (stamp := T0 + int(phase_ms * MS) + k * period) < end:
                if not self._quiet(camera, stamp):
                    push(stamp + int(latency_ms * MS), "image", (camera, stamp, k))
                k += 1
        for kind, hz, latency in (("joint", self.joint_hz, 1), ("command", self.command_hz, 2)):
            if kind == "command" and self.command is None:
                continue
            period = int(1e9 / hz)
            k = -(-(start - T0) // period)
            while (stamp := T0 + k * period) < end:
                if not self._quiet(kind, stamp):
                    push(stamp + latency * MS, kind, stamp)
                k += 1
        poll = int(PERIOD_S * 1e9) // 4  # the node polls at four times the control rate
        k = -(-(start - T0 - int(tick_offset_ms * MS)) // poll)
        while (t := T0 + int(tick_offset_ms * MS) + k * poll) < end:
            push(t, "tick", None)
            k += 1
        for at_s, action in (actions or {}).items():
            push(T0 + int(at_s * 1e9), action, None)
        results = []
        while events:
            arrival, _, kind, payload = heapq.heappop(events)
            self.now = arrival
            if kind == "image":
                camera, stamp, index = payload
                self.frames[camera][frame_value(index)] = stamp
                self.rec.add_image(camera, stamp, raw_frame(frame_value(index)))
            elif kind == "joint":
                names = [*reversed(FR3_JOINTS), "fr3_finger_joint2"]  # any order, extra joints ignored
                values = q(payload)
                positions = [*reversed(values), values[-1]]
                self.rec.add_joint_state(payload, names, positions)
            elif kind == "command":
                self._command(payload)
            elif kind == "tick":
                results.extend(self.rec.poll(arrival))
            elif kind == "start":
                self.rec.start(arrival)
            elif kind == "stop":
                self.rec.stop()
        return results

    def _command(self, stamp: int) -> None:
        if self.command == "joint_state":
            target = q(stamp + PERIOD_S * 1e9)  # a leader arm one period ahead
            self.commands.append((stamp, target))
            self.rec.add_command(self.rec.joint_state_command(stamp, list(FR3_JOINTS), target))
        else:  # a policy chunk: 8 points due (k+1) periods after its stamp, on the same straight line
            offsets = [int((k + 1) * PERIOD_S * 1e9) for k in range(8)]
            points = [(o, list(q(stamp + o) + 0.5)) for o in offsets]  # + 0.5: distinct from the state
            self.rec.add_command(
                self.rec.trajectory_command(
                    stamp, list(reversed(FR3_JOINTS)), [(o, list(reversed(p))) for o, p in points]
                )
            )


def settings(**overrides) -> RecorderSettings:
    base = dict(
        cameras=("front",), image_height=16, image_width=16, control_period_s=PERIOD_S, max_age_s=0.3, max_skew_s=0.04
    )
    return RecorderSettings(**{**base, **overrides})


def record(streams: Streams, seconds: float = 3.0, lead_s: float = 0.5):
    """Warm the streams up, record ``seconds``, stop, let pending frames complete, finish."""
    rec = streams.rec
    streams.run(0.0, lead_s)
    started = streams.now
    rec.start(started)
    results = streams.run(lead_s, lead_s + seconds)
    rec.stop()
    streams.run(lead_s + seconds, lead_s + seconds + 0.5)
    assert rec.pending == 0
    episode = rec.finish(streams.now)
    assert episode.frames == 0 or episode.stamps_ns[0] >= started  # nothing from before the start
    return episode, results


# -- alignment -----------------------------------------------------------------------------------
def test_next_state_aligns_state_images_and_actions_by_stamp():
    rec = EpisodeRecorder(settings())
    streams = Streams(rec)
    episode, results = record(streams)
    assert [r.status for r in results].count(RECORDED) == episode.frames == 30
    assert episode.refused == {}
    assert episode.state.shape == (30, 8) and episode.action.shape == (30, 8)
    assert episode.images["front"].shape == (30, 16, 16, 3) and episode.images["front"].dtype == np.uint8
    for k in range(episode.frames):
        s = int(episode.stamps_ns[k])
        image = episode.images["front"][k]
        assert (image == image[0, 0, 0]).all()
        assert streams.frames["front"][int(image[0, 0, 0])] == s  # the frame taken is the one stamped s
        np.testing.assert_allclose(episode.state[k], q(s), atol=1e-6)
        np.testing.assert_allclose(episode.action[k], q(s + PERIOD_S * 1e9), atol=1e-6)
    # the sample stamps step by one period, give or take one camera period (30 Hz)
    steps = np.diff(episode.stamps_ns) / 1e9
    assert np.all(np.abs(steps - PERIOD_S) < 1 / 30 + 1e-6), steps
    # the action of frame k is (up to that jitter) the state of frame k + 1
    assert np.abs(episode.action[:-1] - episode.state[1:]).max() < VELOCITY.max() * (1 / 30 + 1e-3)


def test_topic_joint_state_action_is_the_newest_command_at_the_sample_stamp():
    rec = EpisodeRecorder(settings(action_source=TOPIC))
    streams = Streams(rec, command="joint_state")
    episode, _ = record(streams, seconds=2.0)
    assert episode.frames == 20 and episode.refused == {}
    stamps = np.array([s for s, _ in streams.commands])
    for k in range(episode.frames):
        s = int(episode.stamps_ns[k])
        expected = streams.commands[int(np.searchsorted(stamps, s, side="right")) - 1][1]
        np.testing.assert_allclose(episode.action[k], expected, atol=1e-6)
        np.testing.assert_allclose(episode.state[k], q(s), atol=1e-6)


def test_topic_trajectory_action_is_the_point_due_one_period_after_the_sample():
    rec = EpisodeRecorder(settings(action_source=TOPIC, command_type="joint_trajectory"))
    streams = Streams(rec, command="joint_trajectory", command_hz=10.0)
    episode, _ = record(streams, seconds=2.0)
    assert episode.frames == 20 and episode.refused == {}
    for k in range(episode.frames):
        s = int(episode.stamps_ns[k])
        np.testing.assert_allclose(episode.action[k], q(s + PERIOD_S * 1e9) + 0.5, atol=1e-5)


@pytest.mark.parametrize("rate_hz", [10.0, 10.2, 9.8])  # drifting by more than a period in 6 s
def test_a_camera_at_the_control_rate_gives_every_frame_once(rate_hz):
    """The MuJoCo bridge renders at 10 Hz: frames half a period off the start, drifting against the clock."""
    rec = EpisodeRecorder(settings())
    streams = Streams(rec, cameras={"front": (rate_hz, 30.0, 50.0)})
    episode, _ = record(streams, seconds=6.0)
    assert episode.refused == {}
    steps = np.diff(episode.stamps_ns) / 1e9
    np.testing.assert_allclose(steps, 1 / rate_hz, atol=1e-6)  # consecutive camera frames, none twice or skipped
    assert abs(episode.frames - 6.0 * rate_hz) <= 1.5


def test_without_cameras_the_joint_states_set_the_sample_stamp():
    rec = EpisodeRecorder(settings(cameras=()))
    streams = Streams(rec, cameras={})
    episode, _ = record(streams, seconds=1.0)
    assert episode.frames == 10 and episode.images == {}
    np.testing.assert_allclose(episode.state, np.stack([q(s) for s in episode.stamps_ns]), atol=1e-6)
    np.testing.assert_allclose(episode.action, np.stack([q(s + PERIOD_S * 1e9) for s in episode.stamps_ns]), atol=1e-6)


# -- refusals ------------------------------------------------------------------------------------
def test_a_stalled_camera_refuses_ticks_and_recording_resumes():
    rec = EpisodeRecorder(settings())
    streams = Streams(rec)
    streams.silent["front"] = (1.5, 2.5)  # one second without pictures
    episode, results = record(streams, seconds=3.0)
    statuses = [r.status for r in results]
    assert statuses.count(STALE) >= 6, statuses  # 1 s gap minus max_age_s 0.3 s ≈ 7 ticks
    assert episode.frames == statuses.count(RECORDED) and 20 <= episode.frames <= 24
    assert episode.refused.get(STALE) == statuses.count(STALE)
    gap = np.diff(episode.stamps_ns).max() / 1e9
    assert 0.9 < gap < 1.15  # the hole is visible in the stamps
    for k in range(episode.frames):  # what was recorded is still aligned
        np.testing.assert_allclose(episode.state[k], q(int(episode.stamps_ns[k])), atol=1e-6)


def test_no_frame_yet_and_camera_slower_than_the_tick():
    rec = EpisodeRecorder(settings())
    rec.start(T0)
    assert rec.poll(T0 + 200 * MS) == []  # not due yet: a frame stamped after T0 may still come
    assert [r.status for r in rec.poll(T0 + 350 * MS)] == [NO_FRAME]
    rec.discard()
    rec = EpisodeRecorder(settings())
    streams = Streams(rec, cameras={"front": (6.0, 20.0, 0.0)})  # 6 Hz camera, 10 Hz ticks
    episode, results = record(streams, seconds=3.0)
    statuses = [r.status for r in results]
    # a 6 Hz camera cannot give 10 frames/s: the sample times without a frame of their own are refused
    assert statuses.count(REPEAT) >= 5 and episode.frames == statuses.count(RECORDED)
    assert 15 <= episode.frames <= 19, statuses  # at most 6 Hz x 3 s
    assert len(set(episode.stamps_ns.tolist())) == episode.frames  # never the same picture twice


def test_unsynchronised_cameras_are_refused_by_skew():
    s = settings(cameras=("front", "wrist"))
    rec = EpisodeRecorder(s)
    # 5 Hz cameras 100 ms apart: the nearest frame of the other camera is always >= 100 ms away
    streams = Streams(rec, cameras={"front": (5.0, 10.0, 0.0), "wrist": (5.0, 10.0, 100.0)})
    episode, results = record(streams, seconds=2.0)
    assert episode.frames == 0 and {r.status for r in results} <= {SKEW, REPEAT}
    assert SKEW in {r.status for r in results}
    rec = EpisodeRecorder(s)
    streams = Streams(rec, cameras={"front": (30.0, 25.0, 0.0), "wrist": (30.0, 40.0, 10.0)})
    episode, _ = record(streams, seconds=2.0)
    assert 19 <= episode.frames <= 20 and episode.refused == {}
    for k in range(episode.frames):
        stamp = int(episode.stamps_ns[k])
        for camera in ("front", "wrist"):
            frame_stamp = streams.frames[camera][int(episode.images[camera][k][0, 0, 0])]
            assert abs(frame_stamp - stamp) <= 1e9 / 60 + 1  # the nearest of a 30 Hz camera


def test_missing_joint_states_or_commands_drop_frames():
    rec = EpisodeRecorder(settings())
    streams = Streams(rec)
    streams.silent["joint"] = (1.45, 2.55)
    episode, _ = record(streams, seconds=3.0)
    assert episode.refused.get(NO_STATE, 0) >= 5 and episode.refused.get(NO_ACTION, 0) >= 1
    assert episode.frames + sum(episode.refused.values()) == 30
    for k in range(episode.frames):
        # exact where joint states bracket the stamp; at the edge of the gap the nearest one (<= max_skew_s away)
        due = int(episode.stamps_ns[k]) + PERIOD_S * 1e9
        near_gap = 1.445e9 <= due - T0 <= 2.55e9
        atol = VELOCITY.max() * 0.04 if near_gap else 1e-6
        np.testing.assert_allclose(episode.action[k], q(due), atol=atol)

    rec = EpisodeRecorder(settings(action_source=TOPIC))
    streams = Streams(rec, command="joint_state")
    streams.silent["command"] = (1.5, 2.5)
    episode, _ = record(streams, seconds=3.0)
    assert 5 <= episode.refused.get(NO_ACTION, 0) <= 8 and episode.frames + episode.refused[NO_ACTION] == 30


def test_stop_completes_pending_frames_and_finish_drops_what_cannot_complete():
    rec = EpisodeRecorder(settings())
    streams = Streams(rec)
    streams.run(0.0, 0.5)
    rec.start(streams.now)
    streams.run(0.5, 1.5)
    rec.stop()
    assert rec.pending >= 1  # the last frame waits for the joint state one period later
    streams.run(1.5, 1.8)
    assert rec.pending == 0
    assert rec.poll(streams.now) == []
    assert rec.finish(streams.now).frames == 10
    # finished while frames wait for joint states that never come: those frames are dropped
    rec.start(streams.now)
    streams.silent["joint"] = (2.6, 99.0)
    results = streams.run(1.8, 2.75)
    rec.stop()
    episode = rec.finish(streams.now)
    assert episode.refused.get(NO_ACTION, 0) >= 1
    assert episode.frames + sum(episode.refused.values()) == [r.status for r in results].count(RECORDED)
    assert episode.stamps_ns[-1] + PERIOD_S * 1e9 <= T0 + 2.6e9 + 0.04e9  # the kept ones have their action


def test_episode_control_and_input_checks():
    rec = EpisodeRecorder(settings())
    rec.start(T0)
    with pytest.raises(DatasetError, match="already being recorded"):
        rec.start(T0)
    streams = Streams(rec)
    streams.run(0.0, 1.0)
    assert rec.frames > 0
    assert rec.discard() > 0 and not rec.recording and rec.frames == 0
    with pytest.raises(RejectedInput) as info:
        rec.add_joint_state(T0, list(FR3_JOINTS[:7]), [0.0] * 7)
    assert info.value.reason == MISSING_JOINTS and "fr3_finger_joint1" in str(info.value)
    assert rec.rejected_inputs["joint_states missing_joints"] == 1
    with pytest.raises(RejectedInput):
        rec.joint_state_command(T0, list(FR3_JOINTS), [float("nan")] * 8)
    with pytest.raises(RejectedInput, match="increase"):
        rec.trajectory_command(T0, list(FR3_JOINTS), [(2, [0.0] * 8), (1, [0.0] * 8)])


def test_settings_are_checked_with_sentences():
    with pytest.raises(ConfigError, match="action_source"):
        settings(action_source="teleop")
    with pytest.raises(ConfigError, match="must be among state_joints"):
        settings(action_joints=("fr3_joint1", "elbow"))
    with pytest.raises(ConfigError, match="repeats"):
        settings(cameras=("front", "front"))
    s = settings(action_joints=())
    assert s.action_joints == FR3_JOINTS
    attrs = s.dataset_attrs()
    assert attrs["obs_spec"] == {"low_dim": {"state": 8}, "cameras": {"front": [3, 16, 16]}}
    assert attrs["state_names"] == {"state": list(FR3_JOINTS)} and attrs["action_space"] == "joint_position"


# -- datasets ------------------------------------------------------------------------------------
def recorded(seconds: float = 1.0, **overrides):
    s = settings(**overrides)
    rec = EpisodeRecorder(s)
    cameras = {c: (30.0, 25.0, 3.0) for c in s.cameras}
    episode, _ = record(Streams(rec, cameras, command="joint_state" if s.action_source == TOPIC else None), seconds)
    return s, episode


def test_append_creates_then_appends_and_training_reads_the_spec(tmp_path):
    from sdm_controller.training.teacher import policy_config_for

    out = tmp_path / "teleop.zarr"
    s, first = recorded(1.0)
    _, second = recorded(2.0)
    r1 = append_episode(out, first, s)
    assert (r1.frames, r1.episodes, r1.total_frames) == (10, 1, 10)
    r2 = append_episode(out, second, s)
    assert (r2.frames, r2.episodes, r2.total_frames) == (20, 2, 30)
    data = load_episodes(out)
    assert data.episode_ends.tolist() == [10, 30]
    np.testing.assert_array_equal(data.obs["state"][10:], second.state)
    np.testing.assert_array_equal(data.action[:10], first.action)
    np.testing.assert_array_equal(data.obs["front"][:10], first.images["front"])
    assert data.attrs["action_names"] == list(FR3_JOINTS) and data.attrs["control_period_s"] == PERIOD_S
    assert data.attrs["source"] == "ros:recorder" and data.attrs["action_source"] == NEXT_STATE
    config = policy_config_for(data, {"unet_preset": "tiny"})
    assert config.obs.low_dim == {"state": 8} and config.obs.cameras == {"front": (3, 16, 16)}
    assert config.action_dim == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["teleop.zarr"]  # no side folders left


def test_append_to_a_dataset_written_elsewhere_with_the_same_spec(tmp_path):
    s, episode = recorded(1.0)
    out = tmp_path / "existing.zarr"
    existing = EpisodeSet.from_episodes([episode.arrays("state")], {**s.dataset_attrs(), "source": "franka-sim"})
    save_episodes(existing, out)
    result = append_episode(out, episode, s)
    assert result.episodes == 2
    attrs = load_episodes(out).attrs
    assert attrs["source"] == "franka-sim" and attrs["sources"] == ["franka-sim", "ros:recorder"]


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"image_height": 32}, "obs_spec"),
        ({"cameras": ("front", "wrist")}, "obs_spec"),
        ({"action_source": TOPIC}, "action_source"),
        ({"control_period_s": 0.05}, "control_period_s"),
        ({"state_joints": tuple(reversed(FR3_JOINTS))}, "state_names"),
    ],
)
def test_appending_to_a_dataset_with_another_spec_is_refused(tmp_path, overrides, words):
    out = tmp_path / "d.zarr"
    s, episode = recorded(0.5)
    append_episode(out, episode, s)
    other, other_episode = recorded(0.5, **overrides)
    with pytest.raises(DatasetError, match=f"cannot append to dataset '{out}'.*{words}"):
        check_dataset(out, other.dataset_attrs())
    with pytest.raises(DatasetError, match=words):
        append_episode(out, other_episode, other)
    assert load_episodes(out).num_episodes == 1


def test_output_that_is_no_dataset_or_has_no_folder(tmp_path):
    s, episode = recorded(0.5)
    (tmp_path / "notes").mkdir()
    with pytest.raises(DatasetError, match="not a readable zarr group|format"):
        append_episode(tmp_path / "notes", episode, s)
    with pytest.raises(DatasetError, match="does not exist"):
        append_episode(tmp_path / "missing" / "d.zarr", episode, s)
    metaworld_like = tmp_path / "mw.zarr"
    attrs = {k: v for k, v in s.dataset_attrs().items() if k != "state_names"}
    save_episodes(EpisodeSet.from_episodes([episode.arrays("state")], attrs), metaworld_like)
    with pytest.raises(DatasetError, match="lacks 'state_names'"):
        append_episode(metaworld_like, episode, s)


def test_a_save_that_dies_midway_leaves_the_old_dataset(tmp_path, monkeypatch):
    out = tmp_path / "d.zarr"
    s, episode = recorded(0.5)
    append_episode(out, episode, s)
    before = load_episodes(out)

    def dies(episodes, path):
        Path(path).mkdir()
        (Path(path) / "zarr.json").write_text("{")  # half a dataset, then the process is killed
        raise KeyboardInterrupt

    monkeypatch.setattr(recording, "save_episodes", dies)
    with pytest.raises(KeyboardInterrupt):
        append_episode(out, episode, s)
    assert load_episodes(out).content_hash() == before.content_hash()
    monkeypatch.undo()
    recover_dataset(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr"]
    # killed between the two renames: the complete new dataset is put in place
    append_episode(out, episode, s)
    writing, previous = tmp_path / ".d.zarr.writing", tmp_path / ".d.zarr.previous"
    out.rename(writing)
    save_episodes(before, previous)
    recover_dataset(out)
    assert load_episodes(out).num_episodes == 2 and not writing.exists() and not previous.exists()


def test_save_time_grows_with_the_dataset_but_stays_small(tmp_path):
    """Measured numbers for the report: 10 episodes of 100 frames with one 96x96 camera."""
    s = settings(image_height=96, image_width=96)
    rng = np.random.default_rng(0)
    n = 100
    episode = recording.Episode(
        stamps_ns=np.arange(n, dtype=np.int64),
        state=rng.random((n, 8), dtype=np.float32),
        action=rng.random((n, 8), dtype=np.float32),
        images={"front": rng.integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)},
    )
    times = []
    for _ in range(10):
        start = time.perf_counter()
        result = append_episode(tmp_path / "big.zarr", episode, s)
        times.append(time.perf_counter() - start)
    assert result.total_frames == 1000
    print(f"append 100-frame episode: first {times[0] * 1e3:.0f} ms, tenth (1000 frames) {times[-1] * 1e3:.0f} ms")
    assert times[-1] < 20.0  # generous: a loaded 2-core machine
