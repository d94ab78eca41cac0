"""One inference cycle of the policy node, and everything it counts, without ROS.

Threads: sensor callbacks call :meth:`PolicyController.add_frame` / :meth:`add_joint_state` (any
thread, concurrently with a cycle); the inference timer calls :meth:`step`; the parameter callback
and the engine loader hand over new settings and engines with :meth:`request_settings` /
:meth:`request_policy`, which take effect at the start of the next cycle, in the inference thread,
so a cycle never sees half of a change.

One cycle: apply pending changes → (enabled? policy loaded?) → observation window (fresh and
complete, else no chunk) → skip if its stamp is the one already used → engine → chunk of the
executed actions (timing: ``chunk``) → blending → limits from the last commanded point → chunk.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sdm_controller.common.joints import JointMapper
from sdm_controller.common.rejected import RejectedInput
from sdm_controller.common.report import ERROR, OK, WARN, Report
from sdm_controller.common.stats import LatencyWindow, RateMeter, Tally
from sdm_controller.control.blending import ChunkBlender
from sdm_controller.control.chunk import ActionChunk, finite_difference_velocities
from sdm_controller.control.frames import FRAME_INTAKE
from sdm_controller.control.limits import ClampCounts
from sdm_controller.control.observation import NotReady, ObservationBuffer, ObservationWindow
from sdm_controller.control.policy_interface import PolicyInterface
from sdm_controller.control.runner import PolicyRunner
from sdm_controller.control.settings import NodeSettings, ResolvedSettings, SettingsError, check_settings
from sdm_controller.policy.observation_spec import ObservationStream

JOINT_STATES = "joint_states"  # stream label of the joint state input in counters and diagnostics

# Outcomes of a cycle
PUBLISHED = "published"
DISABLED = "disabled"
NO_POLICY = "no_policy"
WAITING = "waiting"
STALE = "stale"
NO_NEW_OBSERVATION = "no_new_observation"
LATE = "late"
ENGINE_ERROR = "engine_error"



@dataclass(frozen=True, eq=False)
class CycleResult:
    status: str
    chunk: ActionChunk | None = None
    message: str = ""
    swapped: PolicyInterface | None = None  # set when this cycle switched to a new engine
    clamps: ClampCounts | None = None
    engine_ms: float | None = None  # the engine's own time for this chunk


@dataclass(frozen=True, eq=False)
class ActivePolicy:
    runner: PolicyRunner
    interface: PolicyInterface
    resolved: ResolvedSettings


@dataclass(frozen=True, eq=False)
class _Intake:
    interface: PolicyInterface
    buffer: ObservationBuffer
    mapper: JointMapper
    frame_streams: dict[str, ObservationStream] = field(init=False)  # looked up by every sensor callback

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_streams", {s.name: s for s in self.interface.frame_streams})


class PolicyController:
    """Observation intake, inference cycles, and the counters the diagnostics report."""

    def __init__(self, settings: NodeSettings | None = None) -> None:
        self.settings = settings or NodeSettings()
        self.policy: ActivePolicy | None = None
        self._intake: _Intake | None = None
        self._pending_lock = threading.Lock()
        self._pending_settings: NodeSettings | None = None
        self._pending_policy: tuple[PolicyRunner, PolicyInterface] | None = None
        self.blender = ChunkBlender(self.settings.blending, self.settings.blend_coefficient)
        self.rejected = Tally()  # "<stream> <reason>" -> count
        self.outcomes = Tally()  # cycle status -> count
        self.clamps = ClampCounts()
        self.input_rates: dict[str, RateMeter] = {}
        self.latency = LatencyWindow()  # engine time per call (ms)
        self.chunk_rate = RateMeter()
        self.chunks_published = 0
        self.last_chunk: ActionChunk | None = None
        self.last_status, self.last_message = NO_POLICY, "no artifact loaded yet"
        self.error = ""  # latest artifact/engine error, reported until a policy runs again
        self.loading = ""  # artifact being loaded, for the diagnostics
        self._last_stamp: int | None = None

    # -- hand-over from other threads -------------------------------------------------------
    def request_settings(self, settings: NodeSettings) -> None:
        with self._pending_lock:
            self._pending_settings = settings

    def request_policy(self, runner: PolicyRunner, interface: PolicyInterface) -> None:
        """Swap to ``runner`` (already warm) at the start of the next cycle."""
        with self._pending_lock:
            previous, self._pending_policy = self._pending_policy, (runner, interface)
        if previous is not None:
            previous[0].close()

    @property
    def interface(self) -> PolicyInterface | None:
        return self.policy.interface if self.policy else None

    @property
    def pending_interface(self) -> PolicyInterface | None:
        pending = self._pending_policy
        return pending[1] if pending else None

    # -- sensor intake (any thread) ---------------------------------------------------------
    def add_frame(self, stream: str, stamp_ns: int, raw: Any, now_ns: int) -> RejectedInput | None:
        """Convert (by the stream's kind, ``FRAME_INTAKE``) and store one frame of a per-stream input,
        such as a camera image; the refusal (also counted) or None."""
        intake = self._intake
        spec = intake.frame_streams.get(stream) if intake is not None else None
        if spec is None:
            return None
        try:
            frame = FRAME_INTAKE[spec.kind](raw, spec)
            intake.buffer.add(stream, stamp_ns, frame, now_ns)
        except RejectedInput as exc:
            self.rejected.add(f"{stream} {exc.reason}")
            return exc
        self.input_rates[stream].add(now_ns)
        return None

    def add_joint_state(
        self, stamp_ns: int, names: Sequence[str], positions: Sequence[float] | np.ndarray, now_ns: int
    ) -> RejectedInput | None:
        """Map one joint state by name into the low-dim streams; the refusal (also counted) or None."""
        intake = self._intake
        if intake is None or not intake.interface.state_names:
            return None
        try:
            intake.buffer.add_many(intake.mapper.map(names, positions), stamp_ns, now_ns)
        except RejectedInput as exc:
            self.rejected.add(f"{JOINT_STATES} {exc.reason}")
            return exc
        self.input_rates[JOINT_STATES].add(now_ns)
        return None

    def has_new_observation(self) -> bool:
        """Whether every input stream holds a sample newer than the last chunk's stamp.

        That is when a cycle would build a chunk from a new window (its stamp is the oldest of the
        streams' newest stamps); ``trigger: observation`` starts a cycle exactly then.
        """
        intake = self._intake
        if intake is None:
            return False
        newest = [intake.buffer.newest_stamp(name) for name in intake.buffer.streams]
        if not newest or any(stamp is None for stamp in newest):
            return False
        return self._last_stamp is None or min(newest) > self._last_stamp

    # -- the inference cycle (inference thread) ---------------------------------------------
    def step(self, now_ns: int) -> CycleResult:
        swapped = self._apply_pending()
        result = self._cycle(int(now_ns))
        self.outcomes.add(result.status)
        self.last_status, self.last_message = result.status, result.message
        if swapped is not None:
            result = replace(result, swapped=swapped)
        return result

    def _cycle(self, now_ns: int) -> CycleResult:
        if not self.settings.enabled:
            self.blender.reset()
            return CycleResult(DISABLED, message="parameter 'enabled' is false")
        policy, intake = self.policy, self._intake
        if policy is None or intake is None:
            return CycleResult(NO_POLICY, message=self.error or "no artifact loaded yet")
        try:
            window = intake.buffer.window(now_ns)
        except NotReady as exc:
            return CycleResult(exc.reason, message=str(exc))
        if window.stamp_ns == self._last_stamp:
            return CycleResult(NO_NEW_OBSERVATION, message="no observation newer than the last chunk's")
        self._last_stamp = window.stamp_ns
        interface, resolved = policy.interface, policy.resolved
        try:
            actions = policy.runner(window.arrays)
            prediction = ActionChunk.from_actions(actions, window.stamp_ns, interface.period_ns,
                                                  interface.action_names)
        except Exception as exc:  # noqa: BLE001 - NonFiniteError, EngineInputError, a CUDA error: no chunk, go on
            self.rejected.add(f"engine {type(exc).__name__}")
            return CycleResult(ENGINE_ERROR, message=f"the engine failed: {exc}")
        engine_ms = float(policy.runner.last_timing.get("total_ms", float("nan")))
        self.latency.add(engine_ms)
        blended = self.blender.blend(prediction, resolved.executed_steps, now_ns)
        if blended is None:
            return CycleResult(LATE, message="every action of the chunk was already due when it was ready")
        reference = self._reference(blended, window, interface)
        positions, counts = resolved.limits.apply(blended.positions, blended.period_s, reference)
        velocities = finite_difference_velocities(positions, blended.period_s, reference)
        velocities, counts.velocity = resolved.limits.clip_velocities(velocities, blended.period_s)
        chunk = ActionChunk(blended.stamp_ns, blended.period_ns, blended.names, positions, velocities,
                            blended.offset, reference)
        self.clamps += counts
        self.last_chunk = chunk
        self.chunks_published += 1
        self.chunk_rate.add(now_ns)
        return CycleResult(PUBLISHED, chunk, clamps=counts, engine_ms=engine_ms)

    def _reference(
        self, chunk: ActionChunk, window: ObservationWindow, interface: PolicyInterface
    ) -> np.ndarray | None:
        """Position commanded one period before the chunk's first point.

        The previous chunk's command at that time when it still covers it (continuity between
        chunks); else the measured joint positions of the newest observation (NaN for action
        joints that are not observed); else None.
        """
        t_ref = int(chunk.due_ns[0]) - chunk.period_ns
        last = self.last_chunk
        if last is not None and last.names == chunk.names:
            start = int(last.due_ns[0]) - (last.period_ns if last.reference is not None else 0)
            if start <= t_ref <= int(last.due_ns[-1]):
                return last.position_at(t_ref)
        measured = interface.measured_action_index()
        if not measured:
            return None
        reference = np.full(interface.action_dim, np.nan)
        for a, (key, i) in measured.items():
            reference[a] = float(window.arrays[key][-1, i])
        return reference

    def _apply_pending(self) -> PolicyInterface | None:
        with self._pending_lock:
            settings, self._pending_settings = self._pending_settings, None
            pending, self._pending_policy = self._pending_policy, None
        if settings is not None:
            self._apply_settings(settings)
        if pending is None:
            return None
        return self._swap(*pending)

    def _apply_settings(self, settings: NodeSettings) -> None:
        previous, self.settings = self.settings, settings
        if (settings.blending, settings.blend_coefficient) != (previous.blending, previous.blend_coefficient):
            self.blender = ChunkBlender(settings.blending, settings.blend_coefficient)
        policy = self.policy
        if policy is not None:
            try:
                resolved = check_settings(settings, policy.interface)
            except SettingsError as exc:  # validated before; kept defensive: the old limits stay
                self.error = f"settings do not fit the running artifact: {exc}"
            else:
                self.policy = ActivePolicy(policy.runner, policy.interface, resolved)
        if self._intake is not None:
            self._intake.buffer.set_timing(*self._timing_ns())

    def _timing_ns(self) -> tuple[int, int]:
        return round(self.settings.observation_timeout_s * 1e9), round(self.settings.stamp_tolerance_s * 1e9)

    def _swap(self, runner: PolicyRunner, interface: PolicyInterface) -> PolicyInterface | None:
        try:
            resolved = check_settings(self.settings, interface)
        except SettingsError as exc:
            runner.close()
            self.error = f"the new engine was not started: {exc}"
            return None
        old = self.policy
        self.policy = ActivePolicy(runner, interface, resolved)
        old_intake = self._intake
        if old_intake is None or not interface.same_observations(old_intake.interface):
            buffer = ObservationBuffer(
                interface.streams, interface.n_obs_steps, interface.period_ns, *self._timing_ns()
            )
            self.input_rates = {s.name: RateMeter() for s in interface.frame_streams}
            if interface.state_names:
                self.input_rates[JOINT_STATES] = RateMeter()
            self._intake = _Intake(interface, buffer, JointMapper(interface.state_names))
            self._last_stamp = None
        else:
            self._intake = _Intake(interface, old_intake.buffer, old_intake.mapper)
        if old is None or old.interface.action_names != interface.action_names:
            self.last_chunk = None
        self.blender.reset()
        self.error = ""
        if old is not None:
            old.runner.close()
        return interface

    def close(self) -> None:
        """Release the engines (running and pending)."""
        with self._pending_lock:
            pending, self._pending_policy = self._pending_policy, None
        if pending is not None:
            pending[0].close()
        if self.policy is not None:
            self.policy.runner.close()
            self.policy = None

    # -- diagnostics ------------------------------------------------------------------------
    def report(self, now_ns: int, topics: Mapping[str, str] | None = None) -> Report:
        """Status and key/values for ``/diagnostics``; ``topics`` maps stream labels to topic names."""
        topics = topics or {}
        policy = self.policy
        values: list[tuple[str, str]] = []
        if policy is None:
            if self.loading:
                level, message = WARN, f"loading '{self.loading}'"
            elif self.error:
                level, message = ERROR, self.error
            else:
                level, message = WARN, "no artifact loaded yet"
        elif self.last_status in (PUBLISHED, DISABLED, NO_NEW_OBSERVATION):
            level = OK
            message = "publishing chunks" if self.last_status != DISABLED else "disabled (parameter 'enabled')"
            if self.error:
                level, message = WARN, f"{message}; {self.error}"
        else:
            level, message = WARN, f"no chunk: {self.last_message}"
        runner = policy.runner if policy else None
        values.append(("artifact", policy.interface.artifact if policy else self.settings.artifact))
        values.append(("kind", policy.interface.kind if policy else ""))
        values.append(("backend", str(getattr(runner, "backend_name", "")) if runner else ""))
        values.append(("engine", repr(runner) if runner else ""))
        values.append(("loading", self.loading))
        values.append(("error", self.error))
        values.append(("enabled", str(self.settings.enabled)))
        values.append(("state", self.last_status))
        intake = self._intake
        for stream, meter in self.input_rates.items():
            topic = topics.get(stream, stream)
            values.append((f"input {topic} rate_hz", f"{meter.rate(now_ns):.2f}"))
            newest = None
            if intake is not None:
                keys = [stream] if stream in intake.frame_streams else list(intake.interface.state_names)
                stamps = [intake.buffer.newest_stamp(k) for k in keys]
                newest = min(stamps) if stamps and None not in stamps else None
            values.append((f"input {topic} age_s", f"{(now_ns - newest) / 1e9:.3f}" if newest is not None else "none"))
        p50, p99 = self.latency.percentiles(50, 99)
        values.append(("inference latency_p50_ms", f"{p50:.2f}"))
        values.append(("inference latency_p99_ms", f"{p99:.2f}"))
        values.append(("chunk rate_hz", f"{self.chunk_rate.rate(now_ns):.2f}"))
        values.append(("chunks published", str(self.chunks_published)))
        values.append(("clamps position", str(self.clamps.position)))
        values.append(("clamps step", str(self.clamps.step)))
        values.append(("clamps velocity", str(self.clamps.velocity)))
        rejected = self.rejected.snapshot()
        values.append(("rejected total", str(sum(rejected.values()))))
        values.extend((f"rejected {key}", str(n)) for key, n in rejected.items())
        values.extend((f"cycles {key}", str(n)) for key, n in self.outcomes.snapshot().items())
        return Report(level, message, values)
