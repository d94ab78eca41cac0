"""Recording demonstrations from robot streams: samples at a fixed period, aligned by stamps.

The ROS node (``sdm_controller.ros.recorder``) feeds this module plain values (integer
nanosecond stamps, joint names and positions, raw image fields); everything that decides what
goes into the dataset is here, where a test reaches it without ROS.

**Sampling.** One frame per ``control_period_s``, at *sample times* on the stamp axis, never by
arrival: the first sample time is when ``start`` was called (node clock); the node polls several
times per period and a sample time is taken once the reference stream has a sample stamped at
or after it. The reference stream is the first camera: the frame's *sample stamp* ``s`` is the
stamp of that camera's frame nearest the sample time, and the next sample time is one period
later, pulled halfway towards ``s`` (a phase lock: a camera running at exactly the control rate,
as the MuJoCo bridge's does, is then sampled once per frame instead of drifting against a fixed
grid and taking one frame twice). Other cameras contribute their frame nearest ``s``. Without
cameras the joint states are the reference and ``s`` is the sample time itself. Then, by stamp:

* ``state``: the joint positions at ``s``, linearly interpolated between the two joint states
  whose stamps bracket ``s`` (joint states come at >= 100 Hz, so this is exact to well under a
  millisecond of motion; where only one side exists, the nearest within ``max_skew_s``);
* ``action`` with ``action_source = next_state``: the joint positions measured at ``s +
  control_period_s`` (interpolated the same way), i.e. where the robot actually went, so a
  teleoperated robot needs no command topic;
* ``action`` with ``action_source = topic``: the newest command whose stamp is at or before ``s``
  (what the robot was being told at the time of the observation). A ``sensor_msgs/JointState``
  command holds its ``position``; a ``trajectory_msgs/JointTrajectory`` (e.g. the policy node's
  ``action_chunk``) gives its position due at ``s + control_period_s`` (linear between points,
  held before the first and after the last), which is exactly the dataset's meaning of action k.

A frame whose state or action is not known yet (the joint state one period later has not come,
or a command stamped at or before ``s`` may still arrive) waits in a pending queue and is
completed by a later poll, in order.

**Refusals.** A sample time records nothing, and says why, when a reference stream has no
sample stamped at or after it ``max_age_s`` later on the node clock (the stream is stale, or has
never sent anything), when the reference camera's nearest frame is more than a period
away or is the previous frame again (the camera is slower than the control rate), or when another
camera's nearest frame lies more than ``max_skew_s`` from ``s``. A pending frame is dropped
(counted as refused) when its joint state or command does not come within ``max_age_s``, or the
command is older than ``max_age_s`` at ``s``. Each refusal leaves a gap of one period in the
episode; the stop message and the diagnostics count them.

**Saving.** :func:`append_episode` appends one episode to a dataset in the format of
``sdm_controller.data.episodes``: an existing dataset must have the same spec (observation keys
and shapes, state and action joint names, action space and source, control period); the new
dataset is written beside the old one and swapped in by renaming, so a kill at any moment leaves
either the old or the new dataset complete (:func:`recover_dataset` finishes an interrupted
swap). Each save rewrites the whole dataset (its content hash covers every array), which is
cheap for the dataset sizes a session records (about 0.6 s for 1000 frames with one 96x96
camera on a 2-core machine; it grows linearly).
"""

from __future__ import annotations

import bisect
import os
import shutil
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sdm_controller.common.fr3 import FR3_JOINTS
from sdm_controller.common.images import RawImage, image_to_policy_input
from sdm_controller.common.joints import JointMapper
from sdm_controller.common.rejected import MALFORMED, RejectedInput
from sdm_controller.data.episodes import EpisodeSet, load_episodes, save_episodes
from sdm_controller.errors import ConfigError, DatasetError
from sdm_controller.policy.observation_spec import ObservationSpec

NEXT_STATE = "next_state"
TOPIC = "topic"
ACTION_SOURCES = (NEXT_STATE, TOPIC)
JOINT_STATE = "joint_state"
JOINT_TRAJECTORY = "joint_trajectory"
COMMAND_TYPES = (JOINT_STATE, JOINT_TRAJECTORY)
JOINT_POSITION = "joint_position"

# Tick outcomes / refusal reasons (diagnostics keys).
RECORDED = "recorded"
NO_FRAME = "no_frame"
STALE = "stale"
REPEAT = "no_new_frame"
SKEW = "skew"
NO_STATE = "no_joint_state"
NO_ACTION = "no_action"
BAD_FRAME = "bad_frame"

# Attributes that must be equal for an episode to join an existing dataset.
SPEC_KEYS = ("obs_spec", "state_names", "action_names", "action_space", "action_source", "control_period_s")

NS = 1_000_000_000
HISTORY_S = 3.0  # how much of each stream is kept for lookups (>> max_age_s + control_period_s)


@dataclass(frozen=True)
class RecorderSettings:
    """What to record and how; every field is a parameter of the recorder node."""

    cameras: tuple[str, ...] = ("front",)
    image_height: int = 96
    image_width: int = 96
    state_key: str = "state"
    state_joints: tuple[str, ...] = FR3_JOINTS
    action_joints: tuple[str, ...] = ()  # empty: the state joints
    action_source: str = NEXT_STATE
    command_type: str = JOINT_STATE
    control_period_s: float = 0.1
    max_age_s: float = 0.3
    max_skew_s: float = 0.04
    source: str = "ros:recorder"
    task: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "cameras", tuple(self.cameras))
        object.__setattr__(self, "state_joints", tuple(self.state_joints))
        object.__setattr__(self, "action_joints", tuple(self.action_joints) or tuple(self.state_joints))
        checks = [
            (len(set(self.cameras)) == len(self.cameras), f"parameter 'cameras' repeats a name: {list(self.cameras)}"),
            (all(self.cameras), "parameter 'cameras' has an empty name"),
            (
                self.image_height > 0 and self.image_width > 0,
                f"image size must be positive, got {self.image_height}x{self.image_width}",
            ),
            (bool(self.state_key), "parameter 'state_key' is empty"),
            (self.state_key not in self.cameras, f"state_key '{self.state_key}' is also a camera name"),
            (len(self.state_joints) > 0, "parameter 'state_joints' is empty; name the joints of the state vector"),
            (
                len(set(self.state_joints)) == len(self.state_joints),
                f"parameter 'state_joints' repeats a joint: {list(self.state_joints)}",
            ),
            (
                len(set(self.action_joints)) == len(self.action_joints),
                f"parameter 'action_joints' repeats a joint: {list(self.action_joints)}",
            ),
            (
                self.action_source in ACTION_SOURCES,
                f"parameter 'action_source' is '{self.action_source}'; expected one of {list(ACTION_SOURCES)}",
            ),
            (
                self.command_type in COMMAND_TYPES,
                f"parameter 'command_type' is '{self.command_type}'; expected one of {list(COMMAND_TYPES)}",
            ),
            (
                self.action_source != NEXT_STATE or set(self.action_joints) <= set(self.state_joints),
                f"action_source next_state takes the action from the measured joints, so action_joints "
                f"{list(self.action_joints)} must be among state_joints {list(self.state_joints)}",
            ),
            (self.control_period_s > 0, f"control_period_s must be positive, got {self.control_period_s}"),
            (self.max_age_s > 0, f"max_age_s must be positive, got {self.max_age_s}"),
            (self.max_skew_s >= 0, f"max_skew_s must be >= 0, got {self.max_skew_s}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def period_ns(self) -> int:
        return round(self.control_period_s * NS)

    @property
    def image_size(self) -> tuple[int, int]:
        return self.image_height, self.image_width

    @property
    def observation_spec(self) -> ObservationSpec:
        """The recorded streams: the state vector (low-dim) and one image stream per camera."""
        return ObservationSpec(low_dim={self.state_key: len(self.state_joints)},
                               cameras={name: (3, *self.image_size) for name in self.cameras})

    def dataset_attrs(self) -> dict[str, Any]:
        """The dataset attributes (``SPEC_KEYS`` plus provenance) an episode is saved with."""
        return {
            "source": self.source,
            "task": self.task,
            "obs_spec": self.observation_spec.groups(),
            "state_names": {self.state_key: list(self.state_joints)},
            "action_names": list(self.action_joints),
            "action_space": JOINT_POSITION,
            "action_source": self.action_source,
            "control_period_s": float(self.control_period_s),
            "recorder": {
                "command_type": self.command_type if self.action_source == TOPIC else None,
                "max_age_s": self.max_age_s,
                "max_skew_s": self.max_skew_s,
            },
        }


# -- streams ---------------------------------------------------------------------------------------
class StampedHistory:
    """Values by stamp (ns), time-ordered, the last ``HISTORY_S`` seconds; out-of-order ones refused."""

    def __init__(self, keep_s: float = HISTORY_S) -> None:
        self.keep_ns = int(keep_s * NS)
        self.stamps: deque[int] = deque()
        self.values: deque[Any] = deque()
        self.received = 0

    def add(self, stamp_ns: int, value: Any) -> bool:
        """False (nothing stored) for a stamp not newer than the newest one."""
        if self.stamps and stamp_ns <= self.stamps[-1]:
            return False
        self.stamps.append(int(stamp_ns))
        self.values.append(value)
        self.received += 1
        while self.stamps[0] < stamp_ns - self.keep_ns:
            self.stamps.popleft()
            self.values.popleft()
        return True

    @property
    def newest_stamp(self) -> int | None:
        return self.stamps[-1] if self.stamps else None

    def nearest(self, t_ns: int) -> tuple[int, Any] | None:
        if not self.stamps:
            return None
        i = bisect.bisect_left(self.stamps, t_ns)
        candidates = [j for j in (i - 1, i) if 0 <= j < len(self.stamps)]
        j = min(candidates, key=lambda k: abs(self.stamps[k] - t_ns))
        return self.stamps[j], self.values[j]

    def at_or_after(self, t_ns: int) -> tuple[int, Any] | None:
        i = bisect.bisect_left(self.stamps, t_ns)
        return (self.stamps[i], self.values[i]) if i < len(self.stamps) else None

    def at_or_before(self, t_ns: int) -> tuple[int, Any] | None:
        i = bisect.bisect_right(self.stamps, t_ns) - 1
        return (self.stamps[i], self.values[i]) if i >= 0 else None

    def bracket(self, t_ns: int) -> tuple[tuple[int, Any] | None, tuple[int, Any] | None]:
        """The newest sample at or before ``t_ns`` and the oldest one after it (either may be None)."""
        i = bisect.bisect_right(self.stamps, t_ns)
        before = (self.stamps[i - 1], self.values[i - 1]) if i > 0 else None
        after = (self.stamps[i], self.values[i]) if i < len(self.stamps) else None
        return before, after


@dataclass(frozen=True)
class Command:
    """A commanded target: ``positions[i]`` due at ``due_ns[i]`` (one point for a JointState command)."""

    stamp_ns: int
    due_ns: np.ndarray  # (K,) int64, increasing
    positions: np.ndarray  # (K, Da) float64

    def at(self, t_ns: int) -> np.ndarray:
        """Position due at ``t_ns``: held before the first and after the last point, linear between."""
        due = self.due_ns
        if len(due) == 1 or t_ns <= due[0]:
            return self.positions[0]
        if t_ns >= due[-1]:
            return self.positions[-1]
        i = int(np.searchsorted(due, t_ns, side="right"))
        w = (t_ns - due[i - 1]) / (due[i] - due[i - 1])
        return (1.0 - w) * self.positions[i - 1] + w * self.positions[i]


@dataclass
class _Frame:
    """One sample: images are final when taken; state and action may come later."""

    stamp_ns: int
    images: dict[str, np.ndarray]
    state: np.ndarray | None = None
    action: np.ndarray | None = None


@dataclass
class Episode:
    """A recorded episode: ``frames`` samples, ready for :func:`append_episode`."""

    stamps_ns: np.ndarray  # (L,) int64 sample stamps
    state: np.ndarray  # (L, Ds) float32
    action: np.ndarray  # (L, Da) float32
    images: dict[str, np.ndarray]  # camera -> (L, H, W, 3) uint8
    refused: dict[str, int] = field(default_factory=dict)

    @property
    def frames(self) -> int:
        return len(self.stamps_ns)

    def arrays(self, state_key: str) -> dict[str, np.ndarray]:
        """``{"action": ..., "obs/<key>": ...}`` as ``EpisodeSet.from_episodes`` takes it."""
        out = {"action": self.action, f"obs/{state_key}": self.state}
        out.update({f"obs/{camera}": frames for camera, frames in self.images.items()})
        return out


@dataclass(frozen=True)
class SampleResult:
    status: str  # RECORDED or a refusal reason
    message: str = ""
    stamp_ns: int | None = None


class EpisodeRecorder:
    """Stream intake, fixed-period sampling and the current episode's frames.

    Thread-safe: the node calls ``add_*`` from its subscription callbacks, ``poll`` from a timer
    and ``start``/``finish``/``discard`` from service callbacks.
    """

    def __init__(self, settings: RecorderSettings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        # frames are looked up at most max_age_s back; keeping less bounds memory at full camera resolution
        image_keep_s = min(HISTORY_S, max(1.0, settings.max_age_s + 3 * settings.control_period_s))
        self._images = {camera: StampedHistory(image_keep_s) for camera in settings.cameras}
        self._joints = StampedHistory()
        self._commands = StampedHistory()
        self._state_mapper = JointMapper({"state": settings.state_joints})
        self._action_mapper = JointMapper({"action": settings.action_joints})
        self._action_slots = np.array(
            [settings.state_joints.index(n) for n in settings.action_joints if n in settings.state_joints],
            dtype=np.int64,
        )
        self.recording = False
        self.stopping = False
        self._frames: list[_Frame] = []  # complete frames, in stamp order
        self._pending: deque[_Frame] = deque()  # frames waiting for their state or action
        self._last_stamp: int | None = None  # of the newest frame taken
        self._target = 0  # the next sample time (ns)
        self.refused: Counter[str] = Counter()  # this episode
        self.refused_total: Counter[str] = Counter()  # since start
        self.rejected_inputs: Counter[str] = Counter()  # input messages refused, by "stream reason"
        self.last_refusal = ""

    # -- intake ------------------------------------------------------------------------------------
    def add_image(self, camera: str, stamp_ns: int, image: RawImage) -> None:
        """Keep the raw frame (decoded only when a sample takes it)."""
        with self._lock:
            if not self._images[camera].add(stamp_ns, image):
                self.rejected_inputs[f"{camera} out_of_order"] += 1

    def add_joint_state(self, stamp_ns: int, names: Sequence[str], positions: Sequence[float]) -> None:
        """Raises :class:`RejectedInput` for a message lacking a state joint or with NaN positions."""
        try:
            state = self._state_mapper.map(names, positions)["state"].astype(np.float64)
        except RejectedInput as exc:
            with self._lock:
                self.rejected_inputs[f"joint_states {exc.reason}"] += 1
            raise
        with self._lock:
            if not self._joints.add(stamp_ns, state):
                self.rejected_inputs["joint_states out_of_order"] += 1

    def add_command(self, command: Command) -> None:
        with self._lock:
            if not self._commands.add(command.stamp_ns, command):
                self.rejected_inputs["command out_of_order"] += 1

    def joint_state_command(self, stamp_ns: int, names: Sequence[str], positions: Sequence[float]) -> Command:
        """A ``sensor_msgs/JointState`` command → :class:`Command` (raises :class:`RejectedInput`)."""
        try:
            target = self._map_command(names, positions)
        except RejectedInput as exc:
            self._count_rejected(exc)
            raise
        return Command(int(stamp_ns), np.array([stamp_ns], dtype=np.int64), target[None, :])

    def trajectory_command(
        self, stamp_ns: int, names: Sequence[str], points: Sequence[tuple[int, Sequence[float]]]
    ) -> Command:
        """A ``JointTrajectory`` (points as (time_from_start ns, positions)) → :class:`Command`."""
        try:
            if not points:
                raise RejectedInput(MALFORMED, "trajectory has no points")
            offsets = np.array([p[0] for p in points], dtype=np.int64)
            if np.any(np.diff(offsets) <= 0):
                raise RejectedInput(MALFORMED, "trajectory points' time_from_start must increase")
            rows = np.stack([self._map_command(names, p[1]) for p in points])
        except RejectedInput as exc:
            self._count_rejected(exc)
            raise
        return Command(int(stamp_ns), int(stamp_ns) + offsets, rows)

    def _map_command(self, names: Sequence[str], positions: Sequence[float]) -> np.ndarray:
        return self._action_mapper.map(names, positions)["action"].astype(np.float64)

    def _count_rejected(self, exc: RejectedInput) -> None:
        with self._lock:
            self.rejected_inputs[f"command {exc.reason}"] += 1

    # -- episodes ----------------------------------------------------------------------------------
    def start(self, now_ns: int) -> None:
        """Record from now on: the first frame is the first one stamped at or after ``now_ns``."""
        with self._lock:
            if self.recording or self.stopping:
                raise DatasetError("an episode is already being recorded; stop or discard it first")
            self._reset_episode()
            self._target = int(now_ns)
            self.recording = True

    def stop(self) -> None:
        """No more frames are taken; pending ones are still completed by later polls."""
        with self._lock:
            self.recording = False
            self.stopping = True

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def finish(self, now_ns: int) -> Episode:
        """End the episode: complete what can be completed now, drop the rest, return it."""
        with self._lock:
            self._complete(now_ns, final=True)
            frames, refused = self._frames, dict(self.refused)
            self._reset_episode()
            self.recording = self.stopping = False
        return _episode(frames, self.settings, refused)

    def discard(self) -> int:
        """Drop the episode (recording or stopping); returns how many frames were dropped."""
        with self._lock:
            dropped = len(self._frames) + len(self._pending)
            self._reset_episode()
            self.recording = self.stopping = False
            return dropped

    def _reset_episode(self) -> None:
        self._frames, self._pending = [], deque()
        self._last_stamp: int | None = None
        self._target = 0
        self.refused = Counter()

    @property
    def frames(self) -> int:
        with self._lock:
            return len(self._frames)

    # -- sampling ----------------------------------------------------------------------------------
    def poll(self, now_ns: int) -> list[SampleResult]:
        """Complete pending frames and take every sample time that is due; one result per sample time.

        Call it several times per control period (the node polls at four times the rate): a
        sample time is taken once every reference stream has a sample stamped at or after it.
        """
        with self._lock:
            self._complete(now_ns)
            results = []
            while self.recording:
                result = self._take(now_ns)
                if result is None:
                    break
                results.append(result)
                if result.status != RECORDED:
                    self._refuse(result.status, result.message)
            self._complete(now_ns)
            return results

    def _refuse(self, reason: str, message: str) -> None:
        self.refused[reason] += 1
        self.refused_total[reason] += 1
        self.last_refusal = message

    def _take(self, now_ns: int) -> SampleResult | None:
        """The sample at the current target time, a refusal, or None (not due yet)."""
        settings, g, period = self.settings, self._target, self.settings.period_ns
        streams = {f"camera '{c}'": h for c, h in self._images.items()} or {"joint_states": self._joints}
        late = {name: h.newest_stamp for name, h in streams.items() if h.newest_stamp is None or h.newest_stamp < g}
        if late:
            if now_ns - g <= settings.max_age_s * NS:
                return None  # may still come
            self._target = g + period
            name = min(late, key=lambda n: -1 if late[n] is None else late[n])
            if late[name] is None:
                return SampleResult(NO_FRAME, f"no sample received yet from {name}", g)
            return SampleResult(
                STALE,
                f"newest {name} sample is {(now_ns - late[name]) / 1e6:.0f} ms old (max_age_s {settings.max_age_s})",
                g,
            )
        self._target = g + period
        if not self._images:
            stamp, images = g, {}
        else:
            reference = settings.cameras[0]
            history = self._images[reference]
            # the first frame of an episode is the first one taken after start, never one from before
            stamp, raw = history.nearest(g) if self._last_stamp is not None else history.at_or_after(g)
            if abs(stamp - g) > period:
                return SampleResult(SKEW, f"camera '{reference}' has no frame within a control period", g)
            if self._last_stamp is not None and stamp <= self._last_stamp:
                return SampleResult(REPEAT, f"no new frame from camera '{reference}' since the previous sample", g)
            # Phase-lock the sample times onto the reference camera's frames: with a camera at the
            # control rate a fixed grid would drift against its frames and take one twice, then skip one.
            first = self._last_stamp is None
            self._target = stamp + period if first else g + period + (stamp - g) // 2
            images = {reference: raw}
            for camera in settings.cameras[1:]:
                frame_stamp, images[camera] = self._images[camera].nearest(stamp)
                skew = abs(frame_stamp - stamp)
                if skew > settings.max_skew_s * NS:
                    return SampleResult(
                        SKEW,
                        f"camera '{camera}' has no frame within max_skew_s {settings.max_skew_s} of camera "
                        f"'{reference}' ({skew / 1e6:.0f} ms)",
                        g,
                    )
            try:
                images = {c: image_to_policy_input(raw, *settings.image_size) for c, raw in images.items()}
            except RejectedInput as exc:
                return SampleResult(BAD_FRAME, f"camera frame refused: {exc}", g)
        self._last_stamp = stamp
        self._pending.append(_Frame(stamp, images))
        return SampleResult(RECORDED, "", stamp)

    def _complete(self, now_ns: int, final: bool = False) -> None:
        """Fill state and action of pending frames, oldest first; stop at the first that must wait."""
        while self._pending:
            frame = self._pending[0]
            outcome = self._fill(frame, now_ns, final)
            if outcome is None:  # waits for data
                return
            self._pending.popleft()
            if outcome == RECORDED:
                self._frames.append(frame)
            else:
                self._refuse(outcome, self.last_refusal)

    def _fill(self, frame: _Frame, now_ns: int, final: bool) -> str | None:
        settings = self.settings
        if frame.state is None:
            state = self._joint_at(frame.stamp_ns, now_ns, final)
            if state is None:
                return None
            if isinstance(state, str):
                self.last_refusal = f"joint state at the sample stamp: {state}"
                return NO_STATE
            frame.state = state
        if settings.action_source == NEXT_STATE:
            nxt = self._joint_at(frame.stamp_ns + settings.period_ns, now_ns, final)
            if nxt is None:
                return None
            if isinstance(nxt, str):
                self.last_refusal = f"joint state one control period after the sample stamp: {nxt}"
                return NO_ACTION
            frame.action = nxt[self._action_slots]
            return RECORDED
        command = self._command_at(frame.stamp_ns, now_ns, final)
        if command is None:
            return None
        if isinstance(command, str):
            self.last_refusal = command
            return NO_ACTION
        frame.action = command.at(frame.stamp_ns + settings.period_ns)
        return RECORDED

    def _joint_at(self, t_ns: int, now_ns: int, final: bool) -> np.ndarray | str | None:
        """Positions at ``t_ns`` (array), a refusal reason (str), or None: wait for newer samples."""
        skew_ns = self.settings.max_skew_s * NS
        before, after = self._joints.bracket(t_ns)
        if before is not None and after is not None:
            (t0, q0), (t1, q1) = before, after
            if min(t_ns - t0, t1 - t_ns) > skew_ns:
                return f"no joint state within max_skew_s {self.settings.max_skew_s} (gap {(t1 - t0) / 1e6:.0f} ms)"
            w = (t_ns - t0) / (t1 - t0)
            return (1.0 - w) * q0 + w * q1
        if after is not None:  # older than the history
            return "older than the kept joint state history" if t_ns < after[0] - skew_ns else after[1]
        if not final and now_ns < t_ns + self.settings.max_age_s * NS:
            return None
        if before is not None and t_ns - before[0] <= skew_ns:
            return before[1]  # no newer sample came: hold the newest one
        return "no joint state received" if before is None else f"newest is {(t_ns - before[0]) / 1e6:.0f} ms earlier"

    def _command_at(self, s_ns: int, now_ns: int, final: bool) -> Command | str | None:
        """The newest command stamped at or before ``s_ns`` once no earlier-stamped one can still come."""
        newest = self._commands.newest_stamp
        final = final or (newest is not None and newest > s_ns) or now_ns >= s_ns + self.settings.max_age_s * NS
        if not final:
            return None
        found = self._commands.at_or_before(s_ns)
        if found is None:
            return "no command stamped at or before the sample stamp"
        stamp, command = found
        if s_ns - stamp > self.settings.max_age_s * NS:
            return f"newest command is {(s_ns - stamp) / 1e6:.0f} ms older than the sample (max_age_s)"
        return command

    # -- diagnostics -------------------------------------------------------------------------------
    def stream_ages_ms(self, now_ns: int) -> dict[str, float | None]:
        with self._lock:
            streams = {f"camera {c}": h for c, h in self._images.items()}
            streams["joint_states"] = self._joints
            if self.settings.action_source == TOPIC:
                streams["command"] = self._commands
            return {
                name: (now_ns - h.newest_stamp) / 1e6 if h.newest_stamp is not None else None
                for name, h in streams.items()
            }


def _episode(frames: list[_Frame], settings: RecorderSettings, refused: dict[str, int]) -> Episode:
    h, w = settings.image_size
    n = len(frames)
    return Episode(
        stamps_ns=np.array([f.stamp_ns for f in frames], dtype=np.int64),
        state=np.array([f.state for f in frames], dtype=np.float32).reshape(n, len(settings.state_joints)),
        action=np.array([f.action for f in frames], dtype=np.float32).reshape(n, len(settings.action_joints)),
        images={
            c: np.array([f.images[c] for f in frames], dtype=np.uint8).reshape(n, h, w, 3) for c in settings.cameras
        },
        refused=refused,
    )


# -- datasets --------------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """JSON-like normal form (tuples → lists, numpy scalars → Python), as zarr attributes come back."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def spec_differences(existing: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """One sentence per ``SPEC_KEYS`` attribute that differs (empty: an episode may be appended)."""
    out = []
    for key in SPEC_KEYS:
        have, want = _plain(existing.get(key)), _plain(wanted.get(key))
        if key == "control_period_s" and have is not None and want is not None:
            if abs(float(have) - float(want)) <= 1e-9:
                continue
        elif have == want:
            continue
        out.append(f"{key} is {have!r} there but {want!r} here" if have is not None else f"it lacks '{key}'")
    return out


def read_attrs(path: str | Path) -> dict[str, Any]:
    """The attributes of an existing dataset (raises ``DatasetError`` when it is not one)."""
    import zarr

    from sdm_controller.data.episodes import FORMAT

    try:
        attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    except Exception as exc:  # zarr raises many types for a broken store
        raise DatasetError(f"dataset '{path}' is not a readable zarr group ({type(exc).__name__}: {exc})") from exc
    if attrs.get("format") != FORMAT:
        raise DatasetError(f"'{path}' has format {attrs.get('format')!r}; expected {FORMAT!r}")
    return attrs


def check_dataset(path: str | Path, attrs: dict[str, Any]) -> int:
    """Raise ``DatasetError`` if episodes with ``attrs`` cannot be appended to ``path``.

    Finishes a save that a kill interrupted first (:func:`recover_dataset`). Returns the number of
    episodes already there (0 when ``path`` does not exist yet).
    """
    path = Path(path)
    recover_dataset(path)
    if not path.exists():
        if not path.parent.is_dir():
            raise DatasetError(f"output '{path}': the folder '{path.parent}' does not exist")
        return 0
    existing = read_attrs(path)
    differences = spec_differences(existing, attrs)
    if differences:
        raise DatasetError(
            f"cannot append to dataset '{path}': its spec differs from this recorder's: "
            + "; ".join(differences)
            + ". Record into a new output or change the parameters"
        )
    import zarr

    return int(zarr.open_group(str(path), mode="r")["meta/episode_ends"].shape[0])


def _side_paths(path: Path) -> tuple[Path, Path]:
    return path.with_name(f".{path.name}.writing"), path.with_name(f".{path.name}.previous")


def recover_dataset(path: str | Path) -> None:
    """Finish or undo a save that was interrupted (see :func:`append_episode`)."""
    path = Path(path)
    writing, previous = _side_paths(path)
    if previous.exists():
        if path.exists():  # killed after the new one was in place: the old copy is garbage
            shutil.rmtree(previous)
        else:  # killed between the two renames: the new one is complete
            if writing.exists():
                writing.rename(path)
                shutil.rmtree(previous)
            else:
                previous.rename(path)
    if writing.exists():  # killed while writing: the old dataset (if any) is untouched
        shutil.rmtree(writing)


@dataclass(frozen=True)
class SaveResult:
    path: Path
    frames: int  # of this episode
    episodes: int  # in the dataset now
    total_frames: int
    content_hash: str
    seconds: float


def append_episode(path: str | Path, episode: Episode, settings: RecorderSettings) -> SaveResult:
    """Append ``episode`` to the dataset at ``path`` (created when missing), atomically.

    The new dataset is written to ``.<name>.writing`` beside it, then the old one is renamed to
    ``.<name>.previous``, the new one into place, and the old one removed: a kill at any point
    leaves a complete dataset at ``path`` or one that :func:`recover_dataset` puts back.
    """
    start = time.perf_counter()
    path = Path(path)
    attrs = settings.dataset_attrs()
    check_dataset(path, attrs)
    if episode.frames == 0:
        raise DatasetError("the episode has no frames; nothing to save")
    new = episode.arrays(settings.state_key)
    if path.exists():
        old = load_episodes(path)
        starts = np.concatenate([[0], old.episode_ends[:-1]])
        episodes = [
            {"action": old.action[a:b], **{f"obs/{k}": v[a:b] for k, v in old.obs.items()}}
            for a, b in zip(starts, old.episode_ends, strict=True)
        ]
        missing = set(new) ^ set(episodes[0])
        if missing:
            raise DatasetError(
                f"cannot append to dataset '{path}': its arrays {sorted(episodes[0])} differ from "
                f"this episode's {sorted(new)}"
            )
        merged_attrs = {**old.attrs, **{k: v for k, v in attrs.items() if k in SPEC_KEYS}}
        merged_attrs["sources"] = sorted(
            {*old.attrs.get("sources", [old.attrs.get("source")]), attrs["source"]} - {None}
        )
    else:
        episodes, merged_attrs = [], attrs
    episode_set = EpisodeSet.from_episodes([*episodes, new], merged_attrs)
    writing, previous = _side_paths(path)
    if writing.exists():
        shutil.rmtree(writing)
    content_hash = save_episodes(episode_set, writing)
    _sync_tree(writing)
    if path.exists():
        path.rename(previous)
        writing.rename(path)
        shutil.rmtree(previous)
    else:
        writing.rename(path)
    _sync_dir(path.parent)
    return SaveResult(
        path,
        episode.frames,
        episode_set.num_episodes,
        len(episode_set.action),
        content_hash,
        time.perf_counter() - start,
    )


def _sync_tree(root: Path) -> None:
    """fsync every file of ``root`` so the renames never expose data still in the page cache."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(Path(folder))


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
