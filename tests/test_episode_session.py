"""The recorder's episodes without ROS: start, stop (save), discard, a failed save, live parameters,
and what a start answers when a stream is silent.

A thread stands in for the robot and for the node's poll timer: it feeds the recorder joint
states and camera frames stamped with the wall clock, and polls it, while a service call waits.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from sdm_controller.common.fr3 import FR3_JOINTS
from sdm_controller.common.images import RawImage
from sdm_controller.common.report import ERROR, OK
from sdm_controller.data import episode_session
from sdm_controller.data.episode_session import IDLE, RECORDING, UNSAVED, EpisodeSession
from sdm_controller.data.episodes import load_episodes
from sdm_controller.data.recording import EpisodeRecorder, RecorderSettings
from sdm_controller.errors import SdmError

PERIOD_S = 0.05
FRAME = RawImage(height=48, width=64, encoding="rgb8", step=64 * 3, data=bytes(48 * 64 * 3))


class Lines:
    """A logger that keeps its lines."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warning(self, message: str) -> None:
        self.lines.append(("warning", message))

    def error(self, message: str) -> None:
        self.lines.append(("error", message))

    def text(self, level: str) -> str:
        return "\n".join(message for at, message in self.lines if at == level)


class Robot:
    """Joint states at 100 Hz and camera frames at 50 Hz (but the ``silent`` cameras), stamped now
    and counted like the node counts arrivals; polls the session at 100 Hz, like the node's timer."""

    def __init__(self, session: EpisodeSession, silent: tuple[str, ...] = ()) -> None:
        self.session, self.silent = session, silent
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        recorder, tick = self.session.recorder, 0
        while not self._stop.is_set():
            now = time.time_ns()
            self.session.rates["joint_states"].add(now)
            recorder.add_joint_state(now, list(FR3_JOINTS), np.zeros(len(FR3_JOINTS)))
            if tick % 2 == 0:
                for camera in recorder.settings.cameras:
                    if camera not in self.silent:
                        self.session.rates[f"camera {camera}"].add(now)
                        recorder.add_image(camera, now, FRAME)
            self.session.poll(time.time_ns())
            tick += 1
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def record(tmp_path):
    """``record(cameras, silent)``: a session on its own recorder, fed by a :class:`Robot`."""
    robots: list[Robot] = []

    def start(cameras=("front",), silent=(), output=tmp_path / "episodes.zarr") -> tuple[EpisodeSession, Lines]:
        settings = RecorderSettings(cameras=cameras, image_height=16, image_width=16, control_period_s=PERIOD_S,
                                    max_age_s=0.2)
        log = Lines()
        session = EpisodeSession(EpisodeRecorder(settings), str(output), time.time_ns, log)
        robots.append(Robot(session, silent))
        return session, log

    yield start
    for robot in robots:
        robot.stop()


def test_start_answers_with_the_first_frame_and_stop_saves(record, tmp_path):
    session, log = record()
    assert session.check_output() == ""
    reply = session.start()
    assert reply.success and "recording episode 1" in reply.message and "its first frame is in" in reply.message
    assert session.state == RECORDING and session.episode_frames >= 1
    again = session.start()
    assert not again.success and "already being recorded" in again.message
    time.sleep(0.3)
    report = session.report(time.time_ns())
    assert report.level == OK and report.message.startswith("recording episode 1: ")
    reply = session.stop()
    assert reply.success and "as episode 1 to" in reply.message, reply.message
    frames = load_episodes(tmp_path / "episodes.zarr").episode_ends[-1]
    assert f"saved {frames} frames" in reply.message and frames >= 5
    assert session.state == IDLE and reply.message in log.text("info")
    values = dict(session.report(time.time_ns()).values)
    assert values["episodes_saved"] == "1" and values["dataset"].startswith("1 episodes")
    assert float(values["camera front rate_hz"]) > 20 and float(values["recorded_rate_hz"]) > 0


def test_stop_or_discard_without_an_episode_says_so(record):
    session, _ = record()
    stop = session.stop()
    assert not stop.success and stop.message == "not recording: call start_episode first"
    discard = session.discard()
    assert not discard.success and discard.message == "no episode to discard"


def test_discard_drops_the_episode(record, tmp_path):
    session, _ = record()
    assert session.start().success
    time.sleep(0.2)
    reply = session.discard()
    assert reply.success and reply.message.startswith("discarded the episode (")
    assert session.state == IDLE and session.episode_frames == 0
    assert not session.stop().success  # nothing left to save
    assert not (tmp_path / "episodes.zarr").exists()


def test_a_start_without_a_first_frame_is_refused_and_names_the_silent_stream(record, monkeypatch):
    monkeypatch.setattr(episode_session, "START_WAIT_S", 0.3)
    session, log = record(cameras=("front", "side"), silent=("side",))
    began = time.monotonic()
    reply = session.start()
    assert not reply.success and time.monotonic() - began > 0.3
    assert "no frame recorded" in reply.message and "no episode was started" in reply.message
    assert "'camera side': 'never'" in reply.message and "'camera front': '" in reply.message, reply.message
    assert "'joint_states': '" in reply.message and "no_frame" in reply.message
    assert reply.message in log.text("warning")
    assert session.state == IDLE and not session.stop().success


def test_a_failed_save_keeps_the_episode_until_output_works(record, tmp_path):
    session, log = record()
    assert session.start().success
    time.sleep(0.2)
    session.update({"output": ""})
    assert "parameter 'output' is empty" in log.text("error")
    reply = session.stop()
    assert not reply.success and "could not save the episode: parameter 'output' is empty" in reply.message
    assert session.state == UNSAVED and session.report(time.time_ns()).level == ERROR
    frames = session.episode_frames
    refused = session.start()
    assert not refused.success and f"an unsaved episode ({frames} frames) is waiting" in refused.message
    output = tmp_path / "later.zarr"
    session.update({"output": str(output), "task": "reach"})
    reply = session.stop()
    assert reply.success and f"saved {frames} frames" in reply.message, reply.message
    data = load_episodes(output)
    assert data.episode_ends[-1] == frames and data.attrs["task"] == "reach"


def test_only_output_and_task_change_live(record):
    session, _ = record()
    with pytest.raises(SdmError, match="restart the node to change them"):
        session.update({"control_period_s": 0.1, "task": "reach"})
    with pytest.raises(SdmError, match="'task' must be a string"):
        session.update({"task": 3})
    assert session.settings.task == ""  # a refused change changes nothing
    session.update({"task": "reach"})
    assert session.settings.task == "reach"
