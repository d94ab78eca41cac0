"""A job of task episodes on a simulated stack, from one command: start the nodes, run, stop.

``collect franka-sim`` runs the ``franka_demos`` stack (bridge, driver, scripted expert, recorder)
this way. The nodes are the pip launcher's child processes (:class:`~sdm_controller.stack.supervisor.Supervisor`,
so Ctrl-C and a node that dies stop everything as in ``launch``), their output goes to a log
file, and the job talks to them through an :class:`~sdm_controller.ros.episode_client.EpisodeClient`
on a thread of this process. The stack stops when the job ends; a job whose stack went down first
ends with an error that names the log.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from sdm_controller.errors import SdmError
from sdm_controller.stack.description import Stack
from sdm_controller.stack.supervisor import Supervisor, config_dir, plan

T = TypeVar("T")
JOB_JOIN_S = 60.0


def params_file_with(name: str, values: Mapping[str, object], folder: Path) -> Path:
    """config/<name> with the top-level ``key: value`` lines of ``values`` replaced (comments kept).

    A job's own settings (the cube placements' seed, a sampler's step count) go to the nodes
    through their parameter files, as an operator's would; the packaged file stays untouched.
    """
    text = (config_dir() / name).read_text()
    for key, value in values.items():
        rendered = str(value).lower() if isinstance(value, bool) else str(value)
        text, found = re.subn(rf"(?m)^(\s*{re.escape(key)}:[ \t]*)[^#\n]*?([ \t]*(#.*)?)$",
                              lambda m, v=rendered: f"{m.group(1)}{v}{m.group(2)}", text)
        if found != 1:
            raise SdmError(f"config/{name} has no single '{key}:' line to set")
    path = folder / name
    path.write_text(text)
    return path


def run_on_stack(
    stack: Stack,
    given: Mapping[str, str],
    job: Callable[[object], T],
    log_path: Path,
    env_overrides: Mapping[str, str] | None = None,
    camera_topic: str | None = None,
) -> T:
    """Start ``stack``, run ``job(episode_client)`` on a thread, stop the stack, return the job's result.

    ``camera_topic`` lets the client's episodes capture camera frames."""
    import rclpy
    from rclpy.context import Context

    from sdm_controller.ros.episode_client import EpisodeClient

    specs = plan(stack, given, env=env_overrides)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, object] = {}
    done = threading.Event()
    context = Context()
    rclpy.init(context=context)
    try:
        client = EpisodeClient(context=context, camera_topic=camera_topic)
    except BaseException:
        rclpy.try_shutdown(context=context)
        raise

    def work() -> None:
        try:
            outcome["result"] = job(client)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc
        finally:
            done.set()

    status = 1
    try:
        with log_path.open("w") as log:
            supervisor = Supervisor(specs, env=dict(os.environ, PYTHONUNBUFFERED="1"), out=log)
            thread = threading.Thread(target=work, name="episode-job", daemon=True)
            thread.start()
            try:
                status = supervisor.run(until=done.is_set)
            finally:
                client.stopped.set()
                thread.join(JOB_JOIN_S)
    finally:
        client.close()
        rclpy.try_shutdown(context=context)
    if "error" in outcome:
        error = outcome["error"]
        if not done.is_set() or status != 0:
            raise SdmError(f"the stack stopped (status {status}) before the job was done: {error}; "
                           f"node output in {log_path}") from error
        if isinstance(error, SdmError):
            raise SdmError(f"{error}; node output in {log_path}") from error
        raise error  # type: ignore[misc]
    if "result" not in outcome:
        raise SdmError(f"the stack stopped (status {status}) before the job was done; node output in {log_path}")
    return outcome["result"]  # type: ignore[return-value]
