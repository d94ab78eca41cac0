"""franky-sim (MuJoCo) as a separate process at a fixed loopback address, for tests and benchmarks.

    with SimProcess("127.0.0.31") as sim:      # serves the libfranka protocol on port 1337
        ...                                     # connect exactly as to a real robot
        sim.restart()                           # kill it and start a fresh one (same address)

Its own process so it can be killed and restarted under a connected driver, and so its 1 kHz
Python loop does not share a GIL with the code under test. Its output goes to ``log_path``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

READY_LINE = "Connect to the server using"
SERVER = "from franky_sim.run_server import main; main()"


def _die_with_parent() -> None:
    """Linux: SIGKILL the simulator when the process that started it dies (no orphaned servers)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class SimProcess:
    def __init__(
        self,
        hostname: str,
        log_path: str | Path | None = None,
        start_timeout_s: float = 60.0,
    ) -> None:
        self.hostname = hostname
        self.start_timeout_s = start_timeout_s
        self.log_path = Path(log_path or Path(tempfile.gettempdir()) / f"franky-sim-{hostname}-{os.getpid()}.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> SimProcess:
        env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, "-s", "mujoco", "--hostname", self.hostname],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            preexec_fn=_die_with_parent,
        )
        ready = threading.Event()
        threading.Thread(target=self._pump, args=(self.proc, ready), daemon=True).start()
        if not ready.wait(self.start_timeout_s):
            self.kill()
            raise RuntimeError(
                f"franky-sim did not start at {self.hostname} within {self.start_timeout_s} s "
                f"(log {self.log_path}):\n{self.tail()}"
            )
        return self

    def _pump(self, proc: subprocess.Popen, ready: threading.Event) -> None:
        with self.log_path.open("a") as log:
            for line in proc.stdout:
                log.write(line)
                log.flush()
                if READY_LINE in line:
                    ready.set()

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text()[-3000:]
        return ""

    def kill(self) -> None:
        """Kill it at once (as a crash would)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self, pause_s: float = 0.5) -> None:
        self.kill()
        time.sleep(pause_s)
        self.start()

    def __enter__(self) -> SimProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()
