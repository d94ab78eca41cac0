"""``run_node``: the exit status and the shutdown order whatever moment Ctrl-C comes.

Each case is a small node script run as its own process with real rclpy; SIGINT is sent by the
process to itself at the moment under test (so the moment is exact), and rclpy's own handler
shuts the context down as it would for a Ctrl-C in a terminal.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("rclpy")

from node_process import REPO  # noqa: E402

pytestmark = pytest.mark.ros

SCRIPT = """
import os, signal, sys, time
from rclpy.node import Node
from std_msgs.msg import Bool
from sdm_controller.ros.node_main import run_node

CASE = sys.argv[1]


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(0.5)  # rclpy's handler shuts the context down from a thread of its own


class StartFailed(Exception):
    pass


class Probe(Node):
    def __init__(self):
        if CASE == "before_node":
            ctrl_c()
        super().__init__("probe")
        if CASE == "in_constructor":
            ctrl_c()
            self.create_publisher(Bool, "after", 1)
            print("PUBLISHER CREATED", flush=True)
        if CASE == "bug":
            raise ValueError("a bug in the node")

    def start(self):
        if CASE == "in_start":
            ctrl_c()
        if CASE == "start_error":
            raise StartFailed("the robot is not reachable")
        if CASE in ("spinning", "thread_stuck"):
            self.create_timer(0.2, ctrl_c)

    def close(self):
        print("CLOSED", flush=True)
        return CASE != "thread_stuck"


run_node(Probe, "probe", start=Probe.start, start_errors=(StartFailed,), start_error_code=3)
print("RETURNED", flush=True)
"""


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("node_main") / "probe_node.py"
    path.write_text(textwrap.dedent(SCRIPT))
    return path


def run(script: Path, case: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(script), case], cwd=REPO, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("case", ["before_node", "in_constructor", "in_start", "spinning"])
def test_ctrl_c_at_any_moment_exits_0(script, case):
    result = run(script, case)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Traceback" not in output
    assert "PUBLISHER CREATED" not in output  # the constructor really did fail on the dead context
    assert "RETURNED" in output
    if case == "before_node":  # no node: nothing to close
        assert "CLOSED" not in output and "shutdown requested while starting" in output
    elif case == "in_constructor":  # the node never finished: nothing to close
        assert "CLOSED" not in output
    else:
        assert output.count("CLOSED") == 1


def test_a_start_error_is_logged_as_fatal_and_closes_the_node(script):
    result = run(script, "start_error")
    output = result.stdout + result.stderr
    assert result.returncode == 3, output
    assert "cannot start: the robot is not reachable" in output
    assert output.count("CLOSED") == 1 and "Traceback" not in output


def test_a_bug_while_starting_is_not_taken_for_a_shutdown(script):
    result = run(script, "bug")
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "ValueError: a bug in the node" in output


def test_a_thread_that_does_not_end_exits_without_teardown(script):
    result = run(script, "thread_stuck")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "a thread did not end" in output
    assert "RETURNED" not in output  # os._exit: no interpreter teardown after run_node
