"""The camera node's diagnostic status, from its frame gates: level, one-line message, key/values.

Levels follow ``diagnostic_msgs/DiagnosticStatus``: an enabled stream without a frame for more
than ``frame_timeout_s`` (none yet, a camera unplugged, the pipeline stalled) is an ERROR; a
stream below half its nominal rate, or a recording that has ended, is a WARN.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from sdm_controller.sensors.frame_gate import FrameGate

OK, WARN, ERROR = 0, 1, 2
SLOW_FRACTION = 0.5


@dataclass
class CameraReport:
    level: int
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)


def camera_report(
    gates: Mapping[str, FrameGate],
    nominal_fps: Mapping[str, float],
    now_ns: int,
    started_ns: int,
    frame_timeout_s: float,
    ended: bool = False,
    error: str = "",
    info: tuple[tuple[str, str], ...] = (),
) -> CameraReport:
    """Status of every stream in ``gates`` at ``now_ns`` (node clock); ``info`` is prepended as is."""
    values = list(info)
    problems: list[tuple[int, str]] = []
    rates = []
    for stream, gate in gates.items():
        counts = gate.counts
        rate = gate.rate.rate(now_ns)
        age = gate.age_s(now_ns)
        waited = age if age is not None else (now_ns - started_ns) / 1e9
        nominal = float(nominal_fps.get(stream, 0.0))
        rates.append(f"{stream} {rate:.1f} Hz")
        values += [
            (f"{stream} rate_hz", f"{rate:.2f}"),
            (f"{stream} nominal_fps", f"{nominal:g}"),
            (f"{stream} published", str(counts.published)),
            (f"{stream} repeats_dropped", str(counts.repeats)),
            (f"{stream} stale_dropped", str(counts.stale)),
            (f"{stream} restarts", str(counts.restarts)),
            (f"{stream} lost", str(counts.lost)),
            (f"{stream} last_frame_number", "" if counts.last_number is None else str(counts.last_number)),
            (f"{stream} age_s", "" if age is None else f"{age:.3f}"),
        ]
        if ended:
            continue
        if waited > frame_timeout_s:
            problems.append((ERROR, f"no {stream} frame for {waited:.1f} s"))
        elif age is not None and nominal > 0 and counts.published > 1 and rate < SLOW_FRACTION * nominal:
            problems.append((WARN, f"{stream} at {rate:.1f} Hz, nominal {nominal:g} fps"))
    if error:
        problems.append((ERROR, error))
    if ended:
        problems.append((WARN, "the recording has ended; nothing more will be published"))
    if not problems:
        return CameraReport(OK, ", ".join(rates), values)
    level = max(level for level, _ in problems)
    return CameraReport(level, "; ".join(message for _, message in problems), values)
