"""The pip launcher supervising real processes: Ctrl-C, a dying node, stubborn nodes, a killed launcher.

Each test runs the launcher (:class:`~sdm_controller.stack.supervisor.Supervisor`) as its own
process in its own session, as a terminal would, with a small set of children: a real
``policy_node`` (with an untrained artifact) and short Python programs that misbehave on purpose.
Ctrl-C is a SIGINT to the launcher's process group, which is what a terminal sends. After each
test no process of the launched set may be left: neither a child nor anything a child started.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sdm_controller.bench.untrained_artifact import write_untrained_artifact

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
RUN_SUPERVISOR = textwrap.dedent("""
    import json, sys
    from sdm_controller.stack.supervisor import ProcessSpec, Supervisor
    specs = [ProcessSpec(s[0], tuple(s[1]), after=tuple(s[2]) if len(s) > 2 else None) for s in json.loads(sys.argv[1])]
    options = json.loads(sys.argv[2])
    duration = options.pop("duration", None)
    sys.exit(Supervisor(specs, **options).run(duration))
""")
# A node that starts a grandchild in its own process group and leaves it behind when it exits
# (the grandchild ignores the SIGINT that reaches the whole group).
SPAWNER = textwrap.dedent("""
    import signal, subprocess, sys, time
    child = subprocess.Popen(["sleep", "600"], preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    print(f"grandchild pid {child.pid}", flush=True)
    signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
    while True:
        time.sleep(1)
""")
STUBBORN = textwrap.dedent("""
    import signal, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ignoring SIGINT and SIGTERM", flush=True)
    time.sleep(600)
""")
SIGINT_ONLY_STUBBORN = STUBBORN.replace("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n", "")


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def child_env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST" and env.get("ROS_DOMAIN_ID")  # conftest
    return env


class Launcher:
    """The supervisor in its own session, output to a log file; always stopped in ``close``."""

    def __init__(self, log: Path, specs: list, **options):
        self.log_path = log
        self._log = log.open("w")
        options = {"sigint_timeout": 15.0, "sigterm_timeout": 5.0, **options}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUN_SUPERVISOR, json.dumps(specs), json.dumps(options)],
            cwd=REPO, env=child_env(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output(), re.MULTILINE)
            if match:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern!r} within {timeout} s; output:\n{self.output()[-5000:]}")

    def pids(self) -> dict[str, int]:
        return {m[1]: int(m[2]) for m in re.finditer(r"started (\S+) \(pid (\d+)\)", self.output())}

    def ctrl_c(self) -> None:
        os.killpg(self.proc.pid, signal.SIGINT)  # what a terminal sends to its foreground group

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        for pid in self.pids().values():  # never leave anything behind, even when a test failed
            for target in live_processes({pid}):
                os.kill(target, signal.SIGKILL)
        self._log.close()


def live_processes(groups: set[int]) -> list[int]:
    """Pids of running (not zombie) processes whose pid or process group is in ``groups``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        state, pgrp = fields[0], int(fields[2])
        if state != "Z" and (int(entry.name) in groups or pgrp in groups):
            found.append(int(entry.name))
    return found


def assert_nothing_left(pids, timeout: float = 5.0) -> None:
    groups = set(pids)
    deadline = time.monotonic() + timeout
    while live_processes(groups) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not live_processes(groups), f"processes left behind: {live_processes(groups)}"


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("launcher") / "policy"
    return write_untrained_artifact(folder, cameras=("front",), image_size=(16, 16))


@pytest.fixture
def launch(tmp_path):
    launchers = []

    def start(specs, **timeouts) -> Launcher:
        launcher = Launcher(tmp_path / f"launcher{len(launchers)}.log", specs, **timeouts)
        launchers.append(launcher)
        return launcher

    yield start
    for launcher in launchers:
        launcher.close()


def policy_node(artifact: Path, name: str = "policy_node") -> tuple[str, list[str]]:
    params = str(REPO / "config" / "policy_node.yaml")
    argv = [sys.executable, "-m", "sdm_controller.ros.policy_node", "--ros-args", "-r", f"__node:={name}",
            "--params-file", params, "-p", f"artifact:={json.dumps(str(artifact))}"]  # fmt: skip
    return name, argv


def test_ctrl_c_stops_every_node_and_what_they_started(launch, artifact):
    launcher = launch([policy_node(artifact), ("spawner", python(SPAWNER))])
    launcher.wait_for(r"^\[policy_node\].*engine ready", 90)
    grandchild = int(launcher.wait_for(r"^\[spawner\]\s+grandchild pid (\d+)", 30)[1])
    pids = launcher.pids()
    assert set(pids) == {"policy_node", "spawner"} and live_processes({pids["policy_node"]})

    started = time.monotonic()
    launcher.ctrl_c()
    assert launcher.wait(30) == 0, launcher.output()[-3000:]
    output = launcher.output()
    assert "got SIGINT; stopping the stack" in output
    assert re.search(r"policy_node stopped \(exit 0\)", output), output[-3000:]  # its own clean shutdown
    assert "sending SIGTERM" not in output and "sending SIGKILL" not in output
    assert "killing what is left in spawner's process group" in output  # the grandchild it left behind
    assert_nothing_left([*pids.values(), grandchild])
    print(f"Ctrl-C to launcher exit: {time.monotonic() - started:.1f} s")


def test_a_node_that_dies_stops_the_others_with_a_nonzero_exit(launch, artifact, tmp_path):
    trigger = tmp_path / "die-now"
    dier = f"import os, sys, time\nwhile not os.path.exists({str(trigger)!r}): time.sleep(0.05)\nsys.exit(3)"
    launcher = launch([policy_node(artifact), ("dier", python(dier))])
    launcher.wait_for(r"^\[policy_node\].*engine ready", 90)
    pids = launcher.pids()
    trigger.touch()
    assert launcher.wait(30) == 3, launcher.output()[-3000:]
    output = launcher.output()
    assert "dier ended (exit 3); stopping the stack" in output
    assert re.search(r"policy_node stopped \(exit 0\)", output), output[-3000:]
    assert_nothing_left(pids.values())


def test_nodes_that_ignore_sigint_and_sigterm_are_killed(launch):
    sleeper = python("print('up', flush=True); import time; time.sleep(600)")
    launcher = launch([("stubborn", python(STUBBORN)), ("sleeper", sleeper)], sigint_timeout=1.0, sigterm_timeout=1.0)
    launcher.wait_for(r"^\[stubborn\]\s+ignoring", 20)
    launcher.wait_for(r"^\[sleeper\]\s+up", 20)  # a SIGINT during Python's start-up ends it otherwise
    pids = launcher.pids()
    launcher.ctrl_c()
    assert launcher.wait(20) == 0
    output = launcher.output()
    assert "stubborn still running; sending SIGTERM" in output
    assert "stubborn still running; sending SIGKILL" in output
    assert "stubborn stopped (signal SIGKILL)" in output
    assert "sleeper stopped (signal SIGINT)" in output  # Python re-raises an unhandled SIGINT on exit
    assert_nothing_left(pids.values())


def test_a_second_ctrl_c_skips_the_wait(launch):
    launcher = launch([("stubborn", python(SIGINT_ONLY_STUBBORN))], sigint_timeout=60.0, sigterm_timeout=5.0)
    launcher.wait_for(r"^\[stubborn\]\s+ignoring", 20)
    pids = launcher.pids()
    launcher.ctrl_c()
    launcher.wait_for("stopping the stack", 10)
    time.sleep(0.5)
    started = time.monotonic()
    launcher.ctrl_c()
    assert launcher.wait(10) == 0
    assert time.monotonic() - started < 5.0
    assert "stubborn stopped (signal SIGTERM)" in launcher.output()
    assert_nothing_left(pids.values())


def test_duration_stops_the_stack_with_status_zero(launch):
    launcher = launch([("sleeper", python("import time; time.sleep(600)"))], duration=1.0)
    assert launcher.wait(20) == 0
    assert "ran for 1 s; stopping the stack" in launcher.output()
    assert_nothing_left(launcher.pids().values())


def test_a_node_waiting_for_a_ready_line_starts_after_it(launch):
    server = python("import time; time.sleep(1.5); print('x serving on 127.0.0.2', flush=True); time.sleep(600)")
    client = python("print('client up', flush=True); import time; time.sleep(600)")
    launcher = launch([("server", server), ("client", client, ["server", "serving on"])])
    launcher.wait_for(r"^\[client\]\s+client up", 30)
    output = launcher.output()
    served = re.search(r"^\[server\]\s+x serving on", output, re.MULTILINE).start()
    assert served < output.index("server is ready ('serving on'); starting client")
    assert output.index("starting client") < output.index("started client (pid")
    pids = launcher.pids()
    launcher.ctrl_c()
    assert launcher.wait(20) == 0
    assert_nothing_left(pids.values())


def test_a_ready_line_that_never_comes_stops_the_stack(launch):
    server = python("import time; time.sleep(600)")
    launcher = launch([("server", server), ("client", python("pass"), ["server", "serving on"])], ready_timeout=1.0)
    assert launcher.wait(20) == 1
    output = launcher.output()
    assert "no ready line from server ('serving on') within 1 s; stopping the stack" in output
    assert "started client" not in output
    assert_nothing_left(launcher.pids().values())


def test_a_node_that_cannot_start_stops_the_others(launch):
    launcher = launch([("sleeper", python("import time; time.sleep(600)")), ("ghost", ["/nonexistent/ghost"])])
    assert launcher.wait(20) == 1
    output = launcher.output()
    assert "cannot start ghost" in output and "sleeper stopped (" in output
    assert_nothing_left(launcher.pids().values())


def test_nodes_die_with_a_killed_launcher(launch):
    launcher = launch([("sleeper", python("print('up', flush=True); import time; time.sleep(600)"))])
    launcher.wait_for(r"^\[sleeper\]\s+up", 20)
    pids = launcher.pids()
    launcher.proc.send_signal(signal.SIGKILL)  # only the launcher: no chance to forward anything
    launcher.wait(10)
    assert_nothing_left(pids.values())  # PR_SET_PDEATHSIG sent them SIGTERM


# -- the command line ------------------------------------------------------------------------------
def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sdm_controller", "launch", *args], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def test_cli_refuses_a_real_robot_without_an_address():
    result = run_cli("franka")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = "error: no robot address: pass --robot-ip IP (robot_ip:=IP) for the real robot, or --sim"
    assert result.stderr.strip() == message


def test_cli_names_a_wrong_argument():
    result = run_cli("franka", "--sim", "camra:=wrist")
    assert result.returncode == 2 and "camra" in result.stderr and "Traceback" not in result.stderr
    result = run_cli("franka", "--sim", "--params-file", "driver=/x.yaml")
    assert result.returncode == 2 and "franka_driver" in result.stderr


def test_cli_dry_run_prints_the_node_commands(tmp_path):
    params = tmp_path / "policy.yaml"
    params.write_text((REPO / "config" / "policy_node.yaml").read_text())
    result = run_cli("franka", "--sim", "--dry-run", "--threads", "1", "--artifact", "rel/art",
                     "--params-file", f"policy_node={params}", "camera:=wrist")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = {line.split(":", 1)[0]: line for line in result.stdout.splitlines()}
    assert set(lines) == {"mujoco_bridge", "franka_driver", "policy_node"}
    policy = lines["policy_node"]
    assert "OMP_NUM_THREADS=1 " in policy and "-m sdm_controller.ros.policy_node --ros-args" in policy
    assert f"--params-file {params}" in policy and "-r wrist/image_raw:=camera/color/image_raw" in policy
    assert f'artifact:="{REPO / "rel" / "art"}"' in policy  # made absolute: the nodes may run elsewhere
    assert 'robot_ip:="127.0.0.2"' in lines["franka_driver"]
