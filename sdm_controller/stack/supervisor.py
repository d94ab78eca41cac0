"""The pip launcher: start a stack's nodes as child processes and keep them as one unit.

    python -m sdm_controller launch franka --sim --artifact models/x      # or: sdm-launch franka --sim ...

What ``ros2 launch`` does for the same description (:mod:`sdm_controller.stack.description`),
for installs without ROS 2's launch tooling:

* each node runs as ``python -m sdm_controller.ros.<node> --ros-args -r __node:=... -r __ns:=...
  --params-file <file> -p name:=value -r from:=to``, in its own process group (its own session),
  with stdout and stderr merged and every line prefixed with ``[<node>]``;
* SIGINT / SIGTERM to the launcher (Ctrl-C in a terminal) is forwarded as SIGINT to every node's
  process group; what is still running after ``sigint_timeout`` gets SIGTERM, then SIGKILL after
  ``sigterm_timeout``. A second Ctrl-C skips to the next step;
* a node with a readiness condition (``after`` in the description, e.g. the simulated driver
  after the bridge's "franky-sim serving on" line) starts once that line was printed;
* when one node exits on its own, the others are stopped the same way and the launcher exits
  non-zero (the node's status, or 1 if it exited 0): half a stack must not keep running;
* a node process dies with the launcher even if the launcher is killed with SIGKILL (Linux
  ``PR_SET_PDEATHSIG``), and at the end every node's process group is killed, so nothing a node
  started (e.g. a simulator server) is left behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sdm_controller.errors import SdmError
from sdm_controller.stack.description import (
    USE_SIM,
    NodeSpec,
    Stack,
    argument_values,
    parse_bool,
    resolve,
)

LAUNCHER = "launcher"  # prefix of the launcher's own lines
SIGINT_TIMEOUT_S = 10.0
SIGTERM_TIMEOUT_S = 5.0
READY_TIMEOUT_S = 120.0
POLL_S = 0.05


@dataclass(frozen=True)
class ProcessSpec:
    """One child process: a name for its output prefix, its command line and extra environment."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    after: tuple[str, str] | None = None  # (process, text): start once a line of its output contains text


# -- from the description to command lines ---------------------------------------------------------
def package_folder(name: str) -> Path:
    """A data folder of the package (``config``, ``models``), where it is, or where it would be.

    A source checkout or editable install has it beside the package; ``pip install .`` and colcon
    put the ``data_files`` under ``<prefix>/share/sdm_controller/<name>``.
    """
    candidates = [Path(__file__).resolve().parents[2] / name, Path(sys.prefix) / "share" / "sdm_controller" / name]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def config_dir() -> Path:
    """The folder with the packaged parameter files."""
    folder = package_folder("config")
    if not folder.is_dir():
        raise SdmError(f"cannot find the sdm_controller config folder (no {folder}, nor one under share/)")
    return folder


def yaml_string(value: str) -> str:
    """``value`` as a YAML string scalar, so ``-p name:=<it>`` sets a string (never a bool or a number)."""
    return json.dumps(value)  # a JSON string is a YAML double-quoted scalar


def ros_arguments(node: NodeSpec, values: Mapping[str, str]) -> list[str]:
    """``--ros-args ...`` for ``node`` given every launch argument's value (see ``argument_values``)."""
    args = ["--ros-args", "-r", f"__node:={node.name}"]
    namespace = resolve(node.namespace, values).strip("/")
    if namespace:
        args += ["-r", f"__ns:=/{namespace}"]
    args += ["--params-file", values[node.params_argument]]
    for name, value in node.parameters.items():
        args += ["-p", f"{name}:={yaml_string(resolve(value, values))}"]
    for source, target in node.remappings:
        args += ["-r", f"{resolve(source, values)}:={resolve(target, values)}"]
    return args


def commands(stack: Stack, given: Mapping[str, str], python: str = sys.executable) -> list[tuple[NodeSpec, list[str]]]:
    """Each node that ``given`` launch arguments start, with its command line."""
    values = argument_values(stack, given, config_dir())
    return [
        (node, [python, "-m", node.module, *ros_arguments(node, values)])
        for node in stack.nodes_for(parse_bool(values[USE_SIM]))
    ]


def plan(
    stack: Stack, given: Mapping[str, str], python: str = sys.executable, env: Mapping[str, str] | None = None
) -> list[ProcessSpec]:
    """The processes that ``given`` launch arguments start (what ``ros2 launch`` would start)."""
    nodes = commands(stack, given, python)
    for node, argv in nodes:
        path = Path(argv[argv.index("--params-file") + 1])
        if not path.is_file():
            raise SdmError(
                f"parameter file '{path}' of {node.name} (launch argument {node.params_argument}) does not exist"
            )
    return [
        ProcessSpec(node.name, tuple(argv), dict(env or {}), (node.after.node, node.after.text) if node.after else None)
        for node, argv in nodes
    ]


# -- supervising ------------------------------------------------------------------------------------
def _die_with_parent() -> None:
    """In the child between fork and exec: get SIGTERM when the launcher dies (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1
_PRCTL = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _PRCTL = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True).prctl


class Child:
    """A running node: its process, its output pump and how it ended."""

    def __init__(self, spec: ProcessSpec, env: Mapping[str, str]) -> None:
        self.spec = spec
        self.proc = subprocess.Popen(
            spec.argv,
            env={**env, **spec.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the terminal's Ctrl-C reaches only the launcher
            # The pump threads only read pipes and take the output lock, never a lock the forked
            # child could need between fork and exec (prctl through ctypes).
            preexec_fn=_die_with_parent,
        )
        self.pgid = self.proc.pid  # setsid made it the group leader
        self.pump: threading.Thread | None = None

    def running(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pgid, sig)

    def group_alive(self) -> bool:
        """Whether any process is left in the node's process group (the node or what it started)."""
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def describe_status(code: int) -> str:
    if code >= 0:
        return f"exit {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


class Supervisor:
    """Runs ``specs`` until a stop is requested (signal, duration) or one of them exits.

    ``run()`` returns the launcher's exit status: 0 after a requested stop, otherwise the status
    of the child that ended first (1 if that was 0, 128 + n if it was killed by signal n).
    """

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        env: Mapping[str, str] | None = None,
        sigint_timeout: float = SIGINT_TIMEOUT_S,
        sigterm_timeout: float = SIGTERM_TIMEOUT_S,
        ready_timeout: float = READY_TIMEOUT_S,
        out: IO[str] | None = None,
    ) -> None:
        if not specs:
            raise SdmError("nothing to launch: the stack has no node for these arguments")
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise SdmError(f"two processes share a name in {names}; node names must be unique")
        for spec in specs:
            if spec.after is not None and spec.after[0] not in names:
                raise SdmError(f"{spec.name} waits for {spec.after[0]}, which is not launched")
        self.specs = list(specs)
        self.ready_timeout = ready_timeout
        self._waits = {spec.after for spec in specs if spec.after is not None}
        self._seen: set[tuple[str, str]] = set()
        self.env = dict(os.environ if env is None else env)
        self.sigint_timeout = sigint_timeout
        self.sigterm_timeout = sigterm_timeout
        self.out = out or sys.stdout
        self.children: list[Child] = []
        self._write_lock = threading.Lock()
        self._signals: list[int] = []
        self._width = max(len(n) for n in [*names, LAUNCHER])

    # -- output -----------------------------------------------------------------------------
    def say(self, message: str, name: str = LAUNCHER) -> None:
        with self._write_lock:
            self.out.write(f"[{name}]{' ' * (self._width - len(name))} {message}\n")
            self.out.flush()

    def _pump(self, child: Child) -> None:
        assert child.proc.stdout is not None
        name = child.spec.name
        for raw in iter(child.proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip("\n")
            self.say(line, name)
            for wait in self._waits:
                if wait[0] == name and wait[1] in line:
                    self._seen.add(wait)
        child.proc.stdout.close()

    # -- signals ----------------------------------------------------------------------------
    def _on_signal(self, signum: int, _frame) -> None:
        self._signals.append(signum)

    def _install_handlers(self) -> dict[int, object]:
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    # -- lifecycle --------------------------------------------------------------------------
    def run(self, duration: float | None = None, until: Callable[[], bool] | None = None) -> int:
        """Supervise until a signal, ``duration`` seconds, ``until()`` true (a requested stop: 0) or a child's end."""
        previous = self._install_handlers()
        try:
            return self._run(duration, until)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self, duration: float | None, until: Callable[[], bool] | None) -> int:
        pending = [spec for spec in self.specs if spec.after is not None]
        if not self._start([spec for spec in self.specs if spec.after is None]):
            self.stop()
            return 1
        started = time.monotonic()
        deadline = None if duration is None else started + duration
        status = 0
        while True:
            if self._signals:
                self.say(f"got {signal.Signals(self._signals[0]).name}; stopping the stack")
                break
            if deadline is not None and time.monotonic() >= deadline:
                self.say(f"ran for {duration:g} s; stopping the stack")
                break
            if until is not None and until():
                self.say("the job using the stack is done; stopping the stack")
                break
            ended = next((c for c in self.children if not c.running()), None)
            if ended is not None:
                code = ended.proc.returncode
                self.say(f"{ended.spec.name} ended ({describe_status(code)}); stopping the stack")
                status = 128 - code if code < 0 else (code or 1)
                break
            ready = [spec for spec in pending if spec.after in self._seen]
            if ready:
                for spec in ready:
                    self.say(f"{spec.after[0]} is ready ('{spec.after[1]}'); starting {spec.name}")
                    pending.remove(spec)
                if not self._start(ready):
                    status = 1
                    break
            elif pending and time.monotonic() - started > self.ready_timeout:
                waits = ", ".join(f"{s.after[0]} ('{s.after[1]}')" for s in pending)
                self.say(f"no ready line from {waits} within {self.ready_timeout:g} s; stopping the stack")
                status = 1
                break
            time.sleep(POLL_S)
        self.stop()
        return status

    def _start(self, specs: Sequence[ProcessSpec]) -> bool:
        """Start ``specs`` and their output pumps; False (after saying why) if one cannot start."""
        new = []
        ok = True
        for spec in specs:
            try:
                child = Child(spec, self.env)
            except OSError as exc:
                self.say(f"cannot start {spec.name}: {exc}; stopping the stack")
                ok = False
                break
            self.children.append(child)
            new.append(child)
            self.say(f"started {spec.name} (pid {child.proc.pid}): {shlex.join(spec.argv)}")
        for child in new:  # pumps after the forks (see Child)
            child.pump = threading.Thread(target=self._pump, args=(child,), name=f"pump-{child.spec.name}", daemon=True)
            child.pump.start()
        return ok

    def stop(self) -> None:
        """SIGINT to every running node, then SIGTERM, then SIGKILL; then clear their process groups."""
        handled = len(self._signals)
        steps = ((signal.SIGINT, self.sigint_timeout), (signal.SIGTERM, self.sigterm_timeout), (signal.SIGKILL, 5.0))
        for sig, timeout in steps:
            running = [c for c in self.children if c.running()]
            if not running:
                break
            if sig != signal.SIGINT:
                self.say(f"{', '.join(c.spec.name for c in running)} still running; sending {sig.name}")
            for child in running:
                child.signal_group(sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(c.running() for c in running):
                if len(self._signals) > handled:  # another Ctrl-C: go to the next step now
                    handled = len(self._signals)
                    break
                time.sleep(POLL_S)
        for child in self.children:
            if child.group_alive():  # whatever a node started and left behind
                self.say(f"killing what is left in {child.spec.name}'s process group")
                child.signal_group(signal.SIGKILL)
            if child.proc.returncode is not None:
                self.say(f"{child.spec.name} stopped ({describe_status(child.proc.returncode)})")
        for child in self.children:
            if child.pump is not None:
                child.pump.join(timeout=2.0)


def launch(
    stack: Stack,
    given: Mapping[str, str],
    *,
    duration: float | None = None,
    env_overrides: Mapping[str, str] | None = None,
    dry_run: bool = False,
    out: IO[str] | None = None,
) -> int:
    """Start ``stack`` with the launch arguments ``given``; returns the exit status (see ``Supervisor``)."""
    specs = plan(stack, given, env=env_overrides)
    if dry_run:
        stream = out or sys.stdout
        for spec in specs:
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in spec.env.items())
            stream.write(f"{spec.name}: {env + ' ' if env else ''}{shlex.join(spec.argv)}\n")
        return 0
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return Supervisor(specs, env=env, out=out).run(duration)
