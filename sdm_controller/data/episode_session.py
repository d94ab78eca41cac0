"""The recorder's episodes without ROS: start, stop (save), discard, and what they answer and report.

``start`` answers once the episode's first frame is in, so a caller may start the motion on its
reply and the episode holds the pose before it; when no frame is in within ``START_WAIT_S`` (plus
the time a frame may wait for its state and action) the start fails with the streams' ages and
the refusals, and nothing is recorded: an episode whose beginning is missing is wrong data.
``stop`` stops sampling, lets the polls complete the frames still waiting for their action (at
most ``control_period_s + max_age_s``), and appends the episode to ``output`` before it answers.
If the save fails (e.g. ``output`` holds a dataset with another spec), the episode is kept: set
``output`` and call ``stop`` again, or ``discard``.

While a start or a stop waits, the node's poll timer keeps calling :meth:`EpisodeSession.poll`
from another thread; the waits only watch the frames those polls complete.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from sdm_controller.common.report import ERROR, OK, WARN, Report
from sdm_controller.common.stats import RateMeter
from sdm_controller.data.recording import (
    RECORDED,
    Episode,
    EpisodeRecorder,
    SampleResult,
    append_episode,
    check_dataset,
)
from sdm_controller.errors import ConfigError, SdmError

LIVE = ("output", "task")  # parameters that may change while the recorder runs
START_WAIT_S = 2.0  # beyond a frame's own wait: a loaded machine delays the streams and polls

# States (diagnostics key "state")
IDLE = "idle"
RECORDING = "recording"
STOPPING = "stopping"
UNSAVED = "unsaved"


@dataclass(frozen=True)
class Reply:
    """What a service answers (``std_srvs/Trigger``: success and a sentence)."""

    success: bool
    message: str


class EpisodeSession:
    """One episode at a time of an :class:`EpisodeRecorder`, appended to the dataset at ``output``.

    ``clock_ns()`` is the node's clock (the time base of the stamps); ``log`` a logger
    (``info``/``warning``/``error``): the node's, or the standard library's. The services run one
    at a time; ``poll`` and ``report`` may run beside them (the recorder is thread-safe).
    """

    def __init__(self, recorder: EpisodeRecorder, output: str, clock_ns: Callable[[], int], log: Any = None) -> None:
        self.recorder = recorder
        self.settings = recorder.settings  # with the live 'task'
        self.output = output
        self._clock_ns = clock_ns
        self._log = log or logging.getLogger(__name__)
        self._service_lock = threading.Lock()
        self._unsaved: Episode | None = None  # stopped, but its save failed
        self._episode_index = 0
        self._saved = 0
        self._last_save = ""
        self._dataset = ""  # episodes and frames in output, after the last save
        self._output_error = ""
        #: arrivals per stream (the node counts them as messages come) and frames recorded
        self.rates = {
            name: RateMeter()
            for name in ("recorded", "joint_states", "command", *(f"camera {c}" for c in self.settings.cameras))
        }

    # -- parameters --------------------------------------------------------------------------------
    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply live parameter changes; ``ConfigError`` (nothing changed) for any other parameter."""
        fixed = [name for name in changes if name not in LIVE]
        if fixed:
            raise ConfigError(
                f"{fixed} fix what the dataset holds and are read at start; restart the node to change them "
                f"(live: {list(LIVE)})"
            )
        for name, value in changes.items():
            if not isinstance(value, str):
                raise ConfigError(f"'{name}' must be a string")
        for name, value in changes.items():
            if name == "output":
                self.output = value
            else:
                self.settings = replace(self.settings, task=value)
        self.check_output()

    def check_output(self) -> str:
        """'' when episodes can be appended to ``output``; else the reason (also logged and diagnosed)."""
        if not self.output:
            error = "parameter 'output' is empty; set it to a dataset folder (e.g. /data/teleop.zarr)"
        else:
            try:
                existing = check_dataset(self.output, self.settings.dataset_attrs())
                error = ""
                self._dataset = f"{existing} episodes" if existing else "new"
            except SdmError as exc:
                error = str(exc)
        if error and error != self._output_error:
            self._log.error(error)
        self._output_error = error
        return error

    # -- sampling ----------------------------------------------------------------------------------
    def poll(self, now_ns: int) -> list[SampleResult]:
        """Let the recorder take and complete frames; the sample times it refused."""
        refused = []
        for result in self.recorder.poll(now_ns):
            if result.status == RECORDED:
                self.rates["recorded"].add(now_ns)
            else:
                refused.append(result)
        return refused

    # -- services ----------------------------------------------------------------------------------
    def start(self) -> Reply:
        """Start an episode; succeeds once its first frame is in."""
        with self._service_lock:
            if self._unsaved is not None:
                return Reply(
                    False,
                    f"an unsaved episode ({self._unsaved.frames} frames) is waiting: "
                    "call stop_episode to save it or discard_episode",
                )
            error = self.check_output()
            if error:
                return Reply(False, error)
            core = self.recorder
            try:
                core.start(self._clock_ns())
            except SdmError as exc:
                return Reply(False, str(exc))
            # Answer once the first frame is in, so that a caller who starts the motion on this reply
            # (an episode client recovering the robot, an operator) finds the pose before it in the episode.
            waited = self._wait_for_polls(lambda: core.frames > 0, START_WAIT_S)
            if not core.frames:
                refused = dict(core.refused)
                core.discard()
                ages = {name: "never" if age is None else f"{age:.0f} ms"
                        for name, age in core.stream_ages_ms(self._clock_ns()).items()}
                message = (
                    f"no frame recorded within {waited:.1f} s of the start, so no episode was started "
                    f"(stream ages {ages}; refused samples {refused or 'none'}"
                    f"{'; last: ' + core.last_refusal if refused else ''}); call start_episode again "
                    "once the streams flow"
                )
                self._log.warning(message)
                return Reply(False, message)
            self._episode_index += 1
            message = (
                f"recording episode {self._episode_index} every {self.settings.control_period_s} s "
                f"into '{self.output}' ({self._dataset}); its first frame is in"
            )
            self._log.info(message)
            return Reply(True, message)

    def stop(self) -> Reply:
        """Stop the episode and append it to ``output`` (or save the one a failed save kept)."""
        with self._service_lock:
            core = self.recorder
            if self._unsaved is None:
                if not core.recording:
                    return Reply(False, "not recording: call start_episode first")
                core.stop()
                self._wait_for_polls(lambda: not core.pending)
                episode = core.finish(self._clock_ns())
                if episode.frames == 0:
                    return Reply(
                        False,
                        f"the episode has no frames (refused samples {episode.refused}; "
                        f"last reason: {core.last_refusal}); nothing saved",
                    )
                self._unsaved = episode
            episode = self._unsaved
            refused = sum(episode.refused.values())
            try:
                result = append_episode(self.output, episode, self.settings) if self.output else None
            except SdmError as exc:
                return Reply(False, self._kept(episode, str(exc)))
            if result is None:
                return Reply(False, self._kept(episode, "parameter 'output' is empty"))
            self._unsaved = None
            self._saved += 1
            self._dataset = f"{result.episodes} episodes, {result.total_frames} frames"
            self._last_save = f"{result.seconds:.2f} s"
            detail = f"{refused} samples refused {dict(episode.refused)}" if refused else "no sample refused"
            message = (
                f"saved {episode.frames} frames ({detail}) as episode {result.episodes} to '{result.path}' "
                f"({result.total_frames} frames in all, {result.seconds:.2f} s to save)"
            )
            self._log.info(message)
            return Reply(True, message)

    def discard(self) -> Reply:
        """Drop the episode being recorded, or the one a failed save kept."""
        with self._service_lock:
            if self._unsaved is not None:
                frames, self._unsaved = self._unsaved.frames, None
            elif self.recorder.recording or self.recorder.stopping:
                frames = self.recorder.discard()
            else:
                return Reply(False, "no episode to discard")
            return Reply(True, f"discarded the episode ({frames} frames)")

    def _wait_for_polls(self, done: Callable[[], bool], extra_s: float = 0.2) -> float:
        """Let the polls complete frames until ``done()`` (a frame waits at most
        ``control_period_s + max_age_s`` for its state and action; ``extra_s`` more for the polls
        themselves). Returns the seconds waited."""
        start = time.monotonic()
        deadline = start + self.settings.control_period_s + self.settings.max_age_s + extra_s
        while not done() and time.monotonic() < deadline:
            time.sleep(0.005)
        return time.monotonic() - start

    def _kept(self, episode: Episode, error: str) -> str:
        message = (
            f"could not save the episode: {error}. The episode ({episode.frames} frames) is kept: fix this "
            "(e.g. set 'output') and call stop_episode again, or call discard_episode"
        )
        self._log.error(message)
        return message

    # -- diagnostics -------------------------------------------------------------------------------
    @property
    def state(self) -> str:
        if self._unsaved is not None:
            return UNSAVED
        return RECORDING if self.recorder.recording else STOPPING if self.recorder.stopping else IDLE

    @property
    def episode_frames(self) -> int:
        """Frames of the episode being recorded, or of the one a failed save kept."""
        return self.recorder.frames if self._unsaved is None else self._unsaved.frames

    def report(self, now_ns: int) -> Report:
        core = self.recorder
        state = self.state
        values = [
            ("state", state),
            ("output", self.output),
            ("dataset", self._dataset),
            ("episode_frames", str(self.episode_frames)),
            ("episodes_saved", str(self._saved)),
            ("recorded_rate_hz", f"{self.rates['recorded'].rate(now_ns):.2f}"),
            ("target_rate_hz", f"{1.0 / self.settings.control_period_s:.2f}"),
            ("refused_samples", str(sum(core.refused.values()))),
            ("refused_samples_total", str(sum(core.refused_total.values()))),
            ("last_refusal", core.last_refusal),
            ("last_save", self._last_save),
        ]
        values += [(f"refused {reason}", str(n)) for reason, n in sorted(core.refused_total.items())]
        values += [(f"rejected {key}", str(n)) for key, n in sorted(core.rejected_inputs.items())]
        for stream, age in core.stream_ages_ms(now_ns).items():
            values.append((f"{stream} rate_hz", f"{self.rates[stream].rate(now_ns):.1f}"))
            values.append((f"{stream} age_ms", "none" if age is None else f"{age:.0f}"))
        if self._output_error and state != RECORDING:
            return Report(ERROR, self._output_error, values)
        if state == UNSAVED:
            return Report(ERROR, "an episode could not be saved", values)
        recent_refused = (
            core.recording
            and core.last_refusal
            and self.rates["recorded"].rate(now_ns) < 0.5 / (self.settings.control_period_s)
        )
        if recent_refused:
            return Report(WARN, f"samples refused: {core.last_refusal}", values)
        message = f"recording episode {self._episode_index}: {core.frames} frames" if state == RECORDING else state
        return Report(OK, message, values)
