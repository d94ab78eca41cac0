"""Closed-loop episodes of a policy artifact on the simulated Franka stack, scored from outside.

``python -m sdm_controller sim`` (README command 1) and ``bench franka-sim`` start the ``franka``
stack with ``use_sim:=true``: mujoco_bridge (franky-sim, the camera, the task), franka_driver and
policy_node with the artifact, each its own process, as ``ros2 launch`` would. An
:class:`~sdm_controller.ros.episode_client.EpisodeClient` then runs the task's episodes through
their topics and services: stop the driver (the arm holds), reset (cube somewhere new), recover,
and wait for the bridge's success flag or the timeout. The policy sees only the camera and the joint states.

Per episode it keeps success, the chunks the policy node published and their observation → chunk
latency (arrival − ``header.stamp``, DDS hop included), and the TCP's distance to the cube at the
start and at its closest. The same ``seed`` gives every policy the same cube placements.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from sdm_controller.errors import ConfigError
from sdm_controller.ros.episode_client import EpisodeClient, EpisodeResult
from sdm_controller.stack.description import FRANKA
from sdm_controller.stack.episodes import params_file_with, run_on_stack

CAMERA_TOPIC = "camera/color/image_raw"  # the FRANKA stack's camera_namespace default
START_TIMEOUT_S = 180.0  # nodes up, engine loaded and warm, first chunk out


@dataclass(frozen=True)
class PolicyUnderTest:
    """An artifact and, for a teacher, the sampler the policy node runs it with."""

    label: str
    artifact: Path
    sampler: str = "ddim"
    sampler_steps: int = 10


@dataclass
class SimRun:
    policy: PolicyUnderTest
    episodes: list[EpisodeResult] = field(default_factory=list)

    @property
    def frames(self) -> tuple[np.ndarray, ...]:
        return self.episodes[0].frames if self.episodes else ()

    def latencies_ms(self) -> np.ndarray:
        return np.array([v for e in self.episodes for v in e.latencies_ms], dtype=float)

    def summary(self) -> dict:
        """Success rate, chunk rate and latency percentiles over the episodes."""
        latencies = self.latencies_ms()
        p50, p99 = (np.percentile(latencies, (50, 99)) if latencies.size else (float("nan"),) * 2)
        durations = sum(e.duration_s for e in self.episodes)
        return {
            "label": self.policy.label,
            "artifact": str(self.policy.artifact),
            "sampler": self.policy.sampler,
            "sampler_steps": self.policy.sampler_steps,
            "episodes": len(self.episodes),
            "success": float(np.mean([e.success for e in self.episodes])) if self.episodes else float("nan"),
            "chunk_rate_hz": sum(e.chunks for e in self.episodes) / durations if durations else 0.0,
            "latency_p50_ms": float(p50),
            "latency_p99_ms": float(p99),
            "chunks": int(latencies.size),
            "mean_episode_s": durations / len(self.episodes) if self.episodes else float("nan"),
            "mean_start_distance_m": float(np.nanmean([e.start_distance_m for e in self.episodes] or [np.nan])),
            "mean_min_distance_m": float(np.nanmean([e.min_distance_m for e in self.episodes] or [np.nan])),
        }


def run_policy_on_sim(
    policy: PolicyUnderTest,
    episodes: int,
    log_path: Path,
    seed: int = 1000,
    timeout_s: float = 15.0,
    inference_rate_hz: float = 30.0,
    camera_rate_hz: float = 30.0,
    threads: int = 1,
    capture_first: bool = True,
    progress: bool = True,
) -> SimRun:
    """``episodes`` closed-loop episodes of ``policy`` on a fresh sim stack.

    The policy node runs with ``trigger: observation`` at up to ``inference_rate_hz``: a chunk as
    soon as a newer camera frame and joint state are in, so the chunk rate shows what the
    policy can sustain, up to the camera's rate.
    """
    artifact = Path(policy.artifact).resolve()
    if not (artifact / "policy.json").is_file():
        raise ConfigError(f"'{artifact}' is not a policy artifact (no policy.json)")
    if episodes <= 0 or timeout_s <= 0:
        raise ConfigError(f"episodes and timeout_s must be positive, got {episodes} and {timeout_s}")
    run = SimRun(policy)

    def job(client: EpisodeClient) -> SimRun:
        client.wait_ready(record=False, timeout_s=START_TIMEOUT_S)
        for index in tqdm(range(episodes), desc=f"sim {policy.label}", disable=not progress):
            run.episodes.append(client.run_episode(index, timeout_s, capture=capture_first and index == 0))
        return run

    with tempfile.TemporaryDirectory(prefix="sim_evaluation_") as folder:
        bridge = params_file_with("mujoco_bridge.yaml", {"task_seed": int(seed), "camera_rate_hz": camera_rate_hz},
                                  Path(folder))
        node = params_file_with("policy_node.yaml", {"sampler": policy.sampler, "sampler_steps": policy.sampler_steps,
                                                     "trigger": "observation", "inference_rate_hz": inference_rate_hz},
                                Path(folder))
        given = {"use_sim": "true", "artifact": str(artifact), "mujoco_bridge_params_file": str(bridge),
                 "policy_node_params_file": str(node)}
        return run_on_stack(FRANKA, given, job, log_path, env_overrides={"OMP_NUM_THREADS": str(threads)},
                            camera_topic=CAMERA_TOPIC)
