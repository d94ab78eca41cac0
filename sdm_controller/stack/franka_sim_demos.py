"""Demonstrations of the simulated FR3 reach task, recorded through the ROS stack.

``collect franka-sim`` starts the ``franka_demos`` stack (MuJoCo bridge, franka_driver, the
scripted ``franka_expert`` in the policy node's place, ``recorder``) and runs episodes until
``num_demos`` were saved: each is a task reset, the expert driving the arm through the driver,
and the recorder sampling the camera, the joint states and the expert's chunks into the dataset.
An episode ends at the bridge's success flag and is saved, or at ``timeout_s`` and is discarded.
The bridge's success flag is raised only after the TCP stayed on the cube for ``hold_s``, so each
demonstration ends with the expert holding still on the goal: the policy learns to stop there, not
only to arrive.
So the dataset holds the same topics, stamps and timing the policy node sees when it drives the
arm, not a replay of the simulator's internals.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from tqdm import tqdm

from sdm_controller.errors import ConfigError, SdmError
from sdm_controller.ros.episode_client import EpisodeClient, EpisodeResult
from sdm_controller.stack.description import FRANKA_DEMOS
from sdm_controller.stack.episodes import params_file_with, run_on_stack


def collect_franka_sim(
    out: str | Path,
    num_demos: int = 20,
    seed: int = 0,
    timeout_s: float = 20.0,
    hold_s: float = 1.0,
    max_attempts_factor: int = 2,
    log_path: str | Path | None = None,
    threads: int = 1,
    progress: bool = True,
) -> list[EpisodeResult]:
    """Record until ``num_demos`` successful episodes are in ``out``; returns every episode run."""
    if num_demos <= 0:
        raise ConfigError(f"num_demos must be positive, got {num_demos}")
    if timeout_s <= 0:
        raise ConfigError(f"timeout_s must be positive, got {timeout_s}")
    if not 0 <= hold_s < timeout_s:
        raise ConfigError(f"hold_s must be in [0, timeout_s = {timeout_s:g}), got {hold_s}")
    out = Path(out).resolve()
    if out.exists():
        raise ConfigError(f"'{out}' exists; collect writes a new dataset (the recorder would append to it)")
    log_path = Path(log_path) if log_path else out.with_suffix(".log")

    def job(client: EpisodeClient) -> list[EpisodeResult]:
        client.wait_ready(record=True, timeout_s=120.0)
        results: list[EpisodeResult] = []
        with tqdm(total=num_demos, desc="collect franka-sim", disable=not progress) as bar:
            while sum(r.success for r in results) < num_demos:
                if len(results) >= max_attempts_factor * num_demos:
                    raise SdmError(f"only {sum(r.success for r in results)} of {len(results)} expert episodes "
                                   f"succeeded within {timeout_s:g} s each")
                result = client.run_episode(len(results), timeout_s, record=True)
                results.append(result)
                bar.update(int(result.success))
        return results

    with tempfile.TemporaryDirectory(prefix="collect_franka_sim_") as folder:
        task = {"task_seed": int(seed), "task_hold_s": float(hold_s)}
        bridge = params_file_with("mujoco_bridge.yaml", task, Path(folder))
        given = {"output": str(out), "mujoco_bridge_params_file": str(bridge)}
        return run_on_stack(FRANKA_DEMOS, given, job, log_path, env_overrides={"OMP_NUM_THREADS": str(threads)})
