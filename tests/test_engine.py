"""Engine: torch vs onnxruntime parity, engine cache, a clear error for every bad input, TensorRT on GPUs.

Policies are built directly (random weights, no training) and saved as artifacts: parity does
not need a trained policy, only the same computation on both backends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from sdm_controller.cli import main
from sdm_controller.errors import ArtifactError, ConfigError, SdmError
from sdm_controller.policy.configuration_diffusion import DiffusionConfig, ObservationSpec
from sdm_controller.policy.modeling_diffusion import DiffusionPolicy
from sdm_controller.policy.modeling_one_step import GeneratorSpec, OneStepPolicy
from sdm_controller.runtime.artifact import read_spec, save_artifact
from sdm_controller.runtime.backends import onnxruntime_backend, tensorrt_backend
from sdm_controller.runtime.backends.tensorrt_backend import tensorrt_installed
from sdm_controller.runtime.backends.torch_backend import TorchBackend
from sdm_controller.runtime.engine import BackendUnavailableError, Engine, EngineInputError, NonFiniteError
from sdm_controller.runtime.engine_cache import EngineCache, default_cache_dir
from sdm_controller.runtime.export import export_onnx

# dp3 (512-1024-2048, ~250 M parameters) is left out on purpose: exporting and running it takes
# minutes on a 2-core CI CPU. It is the same module class as dp with wider channels.
PRESETS = ("tiny", "small", "dp")
CONDITIONINGS = ("state", "image")
#: (preset, conditioning) pairs of the parity tests: ResNet-18 images with every preset, and the small
#: convnet image encoder (what the shipped Franka policy uses) with the tiny UNet
PARITY_CASES = [(p, c) for p in PRESETS for c in CONDITIONINGS] + [("tiny", "convnet")]
TOLERANCE = 1e-4  # fp32 torch vs onnxruntime, un-normalized actions

#: per preset: teacher parameterisation, teacher sampler, one-step generator settings (covering
#: the epsilon → x0 conversion, consistency scaling and a noise-free generator between them)
CASES = {
    "tiny": ("epsilon", ("ddpm", 3), GeneratorSpec(timestep=65)),
    "small": ("sample", ("ddim", 2), GeneratorSpec(timestep=100, skip_scale=0.2, out_scale=0.8)),
    "dp": ("sample", ("ddim", 2), GeneratorSpec(timestep=100, noise_input=False)),
}
MAX_DIFFS: dict[str, float] = {}


def stats() -> dict:
    return {"agent_pos": {"min": [-1.0] * 4, "max": [1.0] * 4}, "action": {"min": [-2.0] * 4, "max": [2.0] * 4}}


def make_config(preset: str, conditioning: str, prediction: str = "sample") -> DiffusionConfig:
    """``conditioning``: ``state``, ``image`` (two ResNet-18 cameras) or ``convnet`` (the same, small convnet)."""
    cameras = {"cam0": (3, 96, 96), "cam1": (3, 96, 96)} if conditioning != "state" else {}
    encoder = "convnet" if conditioning == "convnet" else "resnet18"
    return DiffusionConfig(obs=ObservationSpec(low_dim={"agent_pos": 4}, cameras=cameras), unet_preset=preset,
                           prediction_type=prediction, image_encoder=encoder)


def make_teacher(preset: str, conditioning: str, prediction: str = "sample", seed: int = 0) -> DiffusionPolicy:
    torch.manual_seed(seed)
    return DiffusionPolicy(make_config(preset, conditioning, prediction), stats()).eval()


def make_one_step(teacher: DiffusionPolicy, spec: GeneratorSpec) -> OneStepPolicy:
    policy = OneStepPolicy(teacher.config, stats(), spec)
    policy.load_state_dict(teacher.state_dict())
    return policy.eval()


def save_one_step(path: Path, policy: OneStepPolicy) -> Path:
    return save_artifact(path, policy, "one-step", provenance={"test": True})


def observation(config: DiffusionConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = {"agent_pos": rng.uniform(-1, 1, (config.n_obs_steps, 4)).astype(np.float32)}
    for name, (_, h, w) in config.obs.cameras.items():
        obs[name] = rng.integers(0, 256, (config.n_obs_steps, h, w, 3), dtype=np.uint8)
    return obs


def batched(obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v)[None] for k, v in obs.items()}


@dataclass
class Case:
    preset: str
    conditioning: str
    teacher: DiffusionPolicy
    one_step: OneStepPolicy
    teacher_dir: Path
    one_step_dir: Path
    obs: dict[str, np.ndarray]


@pytest.fixture(scope="module", params=PARITY_CASES, ids=[f"{p}-{c}" for p, c in PARITY_CASES])
def case(request, tmp_path_factory) -> Case:
    """A teacher and a one-step artifact with the same weights, both exported to ONNX."""
    preset, conditioning = request.param
    prediction, _, spec = CASES[preset]
    root = tmp_path_factory.mktemp(f"{preset}-{conditioning}")
    teacher = make_teacher(preset, conditioning, prediction)
    one_step = make_one_step(teacher, spec)
    teacher_dir = save_artifact(root / "teacher", teacher, "teacher", provenance={"test": True})
    one_step_dir = save_one_step(root / "one_step", one_step)
    for path in (teacher_dir, one_step_dir):  # the parity tests below are the end-to-end check
        export_onnx(path, verify=False)
    return Case(preset, conditioning, teacher, one_step, teacher_dir, one_step_dir, observation(teacher.config))


def _parity(case: Case, kind: str, **sampler) -> None:
    path = case.teacher_dir if kind == "teacher" else case.one_step_dir
    policy = case.teacher if kind == "teacher" else case.one_step
    out = {}
    for backend in ("torch", "onnxruntime"):
        if backend == "torch":  # the policy in memory (Engine.load(backend="torch") is tested below)
            engine = Engine(TorchBackend(policy, kind, torch.device("cpu")), read_spec(path), seed=7, **sampler)
        else:
            engine = Engine.load(path, backend=backend, seed=7, **sampler)
        assert engine.backend_name == backend
        out[backend] = engine(case.obs)
        assert out[backend].shape == (8, 4) and out[backend].dtype == np.float32
        assert set(engine.last_timing) == {"encoder_ms", "generator_ms", "total_ms"}
        assert 0 < engine.last_timing["generator_ms"] < engine.last_timing["total_ms"]
    diff = float(np.abs(out["torch"] - out["onnxruntime"]).max())
    MAX_DIFFS[f"{case.preset}-{case.conditioning}-{kind}"] = diff
    print(f"\n{case.preset}-{case.conditioning} {kind}: max |torch - onnxruntime| = {diff:.2e}")
    assert diff <= TOLERANCE
    # The torch engine is the policy itself: same seed, same actions as predict_action.
    reference = policy.predict_action(batched(case.obs), generator=torch.Generator().manual_seed(7), **sampler)
    np.testing.assert_allclose(out["torch"], reference[0].numpy(), atol=1e-6, rtol=0)


def test_teacher_torch_and_onnxruntime_agree(case: Case) -> None:
    method, steps = CASES[case.preset][1]
    _parity(case, "teacher", steps=steps, method=method)


def test_one_step_torch_and_onnxruntime_agree(case: Case) -> None:
    _parity(case, "one-step")


# -- a tiny state policy for everything else ------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny state-conditioned teacher artifact, exported."""
    path = save_artifact(tmp_path_factory.mktemp("tiny") / "teacher", make_teacher("tiny", "state"), "teacher",
                         provenance={"test": True})
    export_onnx(path, verify=False)
    return path


@pytest.fixture
def tiny_copy(tiny, tmp_path) -> Path:
    return Path(shutil.copytree(tiny, tmp_path / "artifact"))


def tiny_obs() -> dict[str, np.ndarray]:
    return observation(make_config("tiny", "state"))


def test_seed_makes_actions_reproducible_and_warmup_does_not_shift_them(tiny) -> None:
    a = Engine.load(tiny, backend="onnxruntime", steps=2, seed=1)
    b = Engine.load(tiny, backend="onnxruntime", steps=2, seed=1)
    times = a.warmup(3)
    assert len(times) == 3 and all(t > 0 for t in times)
    first = a(tiny_obs())
    np.testing.assert_array_equal(first, b(tiny_obs()))
    assert not np.array_equal(first, a(tiny_obs()))  # fresh noise on the next call
    a.reseed(1)
    np.testing.assert_array_equal(first, a(tiny_obs()))
    out = np.zeros((8, 4), np.float32)
    assert a(tiny_obs(), out=out) is out


def test_auto_picks_onnxruntime_when_exported_and_torch_otherwise(tiny, tiny_copy, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sdm_controller.runtime")
    assert Engine.load(tiny, steps=2).backend_name == "onnxruntime"
    (tiny_copy / "onnx.json").unlink()
    caplog.clear()
    engine = Engine.load(tiny_copy, steps=2)
    assert engine.backend_name == "torch"
    assert "skipped onnxruntime" in caplog.text and "python -m sdm_controller export" in caplog.text
    assert "picked torch" in caplog.text


def test_onnxruntime_without_export_says_how_to_export(tiny_copy) -> None:
    for name in ("onnx.json", "encoder.onnx", "denoiser.onnx"):
        (tiny_copy / name).unlink()
    with pytest.raises(ArtifactError, match="python -m sdm_controller export --artifact"):
        Engine.load(tiny_copy, backend="onnxruntime")


def test_stale_or_corrupt_export_is_refused(tiny_copy) -> None:
    (tiny_copy / "denoiser.onnx").write_bytes(b"not a graph")
    with pytest.raises(ArtifactError, match="denoiser.onnx.*sha256 differs.*export --artifact"):
        Engine.load(tiny_copy, backend="onnxruntime")
    save_artifact(tiny_copy, make_teacher("tiny", "state", seed=1), "teacher", provenance={})  # new weights
    with pytest.raises(ArtifactError, match="stale.*export --artifact"):
        Engine.load(tiny_copy, backend="onnxruntime")


def test_missing_backends_name_the_package(tiny, monkeypatch) -> None:
    if not (tensorrt_installed() and torch.cuda.is_available()):
        with pytest.raises(BackendUnavailableError, match=r"torch_tensorrt.*requirements-gpu\.txt"):
            Engine.load(tiny, backend="tensorrt", device="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(BackendUnavailableError, match="CUDA"):
            Engine.load(tiny, backend="torch", device="cuda")
    monkeypatch.setattr(onnxruntime_backend, "onnxruntime_installed", lambda: False)
    with pytest.raises(BackendUnavailableError, match="needs the package onnxruntime"):
        Engine.load(tiny, backend="onnxruntime")
    assert Engine.load(tiny, steps=2).backend_name == "torch"  # auto falls back
    with pytest.raises(ConfigError, match="backend 'jax' is unknown"):
        Engine.load(tiny, backend="jax")
    with pytest.raises(ConfigError, match="steps"):
        Engine.load(tiny, steps=0)
    with pytest.raises(ConfigError, match="sampler 'euler'"):
        Engine.load(tiny, method="euler")


@pytest.fixture(scope="module")
def image_engine(tmp_path_factory) -> Engine:
    path = save_artifact(tmp_path_factory.mktemp("img") / "t", make_teacher("tiny", "image"), "teacher",
                         provenance={})
    return Engine.load(path, backend="torch", steps=1)


def good_image_obs() -> dict[str, np.ndarray]:
    return observation(make_config("tiny", "image"))


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda o: o.pop("cam1"), r"'cam1' is missing; expected a uint8 array of shape \(2, 96, 96, 3\)"),
        (lambda o: o.update(wrist=o["cam0"]), r"'wrist' is not an input.*'cam0': uint8 array of shape"),
        (lambda o: o.update(agent_pos=o["agent_pos"].astype(np.float64)),
         r"'agent_pos' has dtype float64; expected a float32 array of shape \(2, 4\)"),
        (lambda o: o.update(agent_pos=o["agent_pos"][:1]),
         r"'agent_pos' has shape \(1, 4\); expected a float32 array of shape \(2, 4\)"),
        (lambda o: o.update(cam0=o["cam0"].astype(np.float32) / 255),
         r"'cam0' has dtype float32; expected a uint8 array of shape \(2, 96, 96, 3\)"),
        (lambda o: o.update(cam0=np.ascontiguousarray(o["cam0"].transpose(0, 3, 1, 2))),
         r"'cam0' has shape \(2, 3, 96, 96\); expected a uint8"),
        (lambda o: o.update(agent_pos=o["agent_pos"].tolist()), r"'agent_pos' must be a numpy float32 array"),
    ],
    ids=["missing", "unknown", "dtype", "shape", "image-dtype", "image-chw", "not-array"],
)
def test_bad_observations_name_the_key_and_expectation(image_engine, change, pattern) -> None:
    obs = good_image_obs()
    change(obs)
    with pytest.raises(EngineInputError, match=pattern):
        image_engine(obs)


def test_non_finite_input_and_output_raise(image_engine, tmp_path) -> None:
    assert image_engine(good_image_obs()).shape == (8, 4)
    with pytest.raises(EngineInputError, match="dict of numpy arrays"):
        image_engine([good_image_obs()])
    for bad in (np.nan, np.inf):
        obs = good_image_obs()
        obs["agent_pos"][1, 2] = bad
        with pytest.raises(NonFiniteError, match="'agent_pos' contains NaN or inf"):
            image_engine(obs)
    # A policy whose weights produce NaN: refused, and the caller's buffer is left alone.
    for kind in ("teacher", "one-step"):
        teacher = make_teacher("tiny", "state")
        teacher.unet.final[1].bias.data.fill_(float("nan"))
        if kind == "teacher":
            path = save_artifact(tmp_path / kind, teacher, kind, provenance={})
        else:
            path = save_one_step(tmp_path / kind, make_one_step(teacher, GeneratorSpec(timestep=100)))
        engine = Engine.load(path, backend="torch", steps=2)
        out = np.full((8, 4), 5.0, np.float32)
        with pytest.raises(NonFiniteError, match="NaN or inf actions"):
            engine(tiny_obs(), out=out)
        assert (out == 5.0).all()
    assert issubclass(NonFiniteError, SdmError) and issubclass(EngineInputError, SdmError)


# -- engine cache ---------------------------------------------------------------------------


class CountingBuilder:
    def __init__(self, payload: bytes = b"engine-bytes") -> None:
        self.calls = 0
        self.payload = payload

    def __call__(self) -> bytes:
        self.calls += 1
        return self.payload + str(self.calls).encode()


KEYS = {"artifact_weights_sha256": "ab" * 32, "gpu": "NVIDIA H100", "tensorrt": "10.9.0"}


def test_engine_cache_reuses_on_hit_and_rebuilds_on_changed_key(tmp_path) -> None:
    cache, build = EngineCache(tmp_path), CountingBuilder()
    first = cache.get_or_build("policy-encoder", KEYS, build)
    again = cache.get_or_build("policy-encoder", KEYS, build)
    assert (first.built, again.built, again.reason, build.calls) == (True, False, "hit", 1)
    assert again.path == first.path and first.path.read_bytes() == b"engine-bytes1"
    sidecar = json.loads(first.path.with_name(first.path.name + ".json").read_text())
    assert sidecar["keys"] == dict(sorted(KEYS.items())) and sidecar["size"] == len(b"engine-bytes1")
    for changed in ({"artifact_weights_sha256": "cd" * 32}, {"gpu": "NVIDIA L4"}, {"tensorrt": "10.12.0"}):
        result = cache.get_or_build("policy-encoder", {**KEYS, **changed}, build)
        assert result.built and result.path != first.path
    assert build.calls == 4
    assert not cache.get_or_build("policy-encoder", KEYS, build).built  # the old entry is still valid


def test_engine_cache_rebuilds_corrupt_or_mismatched_entries(tmp_path) -> None:
    cache, build = EngineCache(tmp_path), CountingBuilder()
    path = cache.get_or_build("g", KEYS, build).path
    path.write_bytes(path.read_bytes()[:-1] + b"X")  # one flipped byte
    result = cache.get_or_build("g", KEYS, build)
    assert result.built and result.reason.startswith("corrupt") and path.read_bytes() == b"engine-bytes2"
    sidecar = path.with_name(path.name + ".json")
    record = json.loads(sidecar.read_text())
    record["keys"]["gpu"] = "another GPU"  # a sidecar that belongs to other key fields
    sidecar.write_text(json.dumps(record))
    result = cache.get_or_build("g", KEYS, build)
    assert result.built and "key mismatch (gpu)" in result.reason
    sidecar.write_text("{not json")
    assert cache.get_or_build("g", KEYS, build).reason == "sidecar unreadable"
    path.unlink()
    assert cache.get_or_build("g", KEYS, build).reason == "not cached"
    assert build.calls == 5 and cache.get_or_build("g", KEYS, build).reason == "hit"
    with pytest.raises(SdmError, match="not bytes"):
        cache.get_or_build("h", KEYS, lambda: "text")
    assert not list(tmp_path.glob(".*.tmp"))


def test_engine_cache_folder_follows_sdm_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SDM_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c" and EngineCache().root == tmp_path / "c"
    monkeypatch.delenv("SDM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x" / "sdm_controller" / "engines"


# -- command line ---------------------------------------------------------------------------


def test_export_command(tmp_path, capsys) -> None:
    teacher = make_teacher("tiny", "state", prediction="epsilon")
    path = save_one_step(tmp_path / "os", make_one_step(teacher, GeneratorSpec(timestep=65)))
    assert main(["export", "--artifact", str(path)]) == 0
    printed = capsys.readouterr().out
    assert "generator.onnx" in printed and "max |onnxruntime - torch|" in printed
    manifest = json.loads((path / "onnx.json").read_text())
    assert manifest["opset"] >= 17 and set(manifest["graphs"]) == {"encoder", "generator"}
    assert manifest["graphs"]["generator"]["inputs"][0] == {"name": "z", "shape": [1, 16, 4], "dtype": "float32"}
    assert Engine.load(path, backend="onnxruntime").backend_name == "onnxruntime"
    assert main(["export", "--artifact", str(path), "--opset", "13"]) == 2
    assert "opset 13 is too old" in capsys.readouterr().err
    if not (tensorrt_installed() and torch.cuda.is_available()):
        assert main(["export", "--artifact", str(path), "--tensorrt"]) == 2
        assert "torch_tensorrt" in capsys.readouterr().err


def test_latency_benchmark_of_a_given_pair(tmp_path, capsys) -> None:
    """``bench latency --pair``: a trained teacher and its generator measured in one run, on copies (the
    given folders get no export); a swapped pair or two unrelated policies are refused."""
    teacher = make_teacher("tiny", "convnet")
    teacher_dir = save_artifact(tmp_path / "teacher", teacher, "teacher", provenance={})
    one_step_dir = save_one_step(tmp_path / "one_step", make_one_step(teacher, GeneratorSpec(timestep=100)))
    out = tmp_path / "latency.json"
    args = ["bench", "latency", "--work", str(tmp_path / "work"), "--out", str(out), "--rounds", "1"]
    assert main([*args, "--pair", str(teacher_dir), str(one_step_dir)]) == 0
    result = json.loads(out.read_text())
    assert {(r["backend"], r["method"]) for r in result["rows"]} == {
        (b, m) for b in ("torch", "onnxruntime") for m in ("teacher-ddpm100", "teacher-ddim10", "one-step")}
    assert {(r["size"], r["conditioning"]) for r in result["rows"]} == {("tiny", "image")}
    assert all(item["speedup_vs_ddpm100"] > 1 for item in result["summary"])
    assert out.with_suffix(".png").is_file() and not (teacher_dir / "onnx.json").exists()
    assert main([*args, "--pair", str(one_step_dir), str(teacher_dir)]) == 2
    assert "is a one-step artifact; expected a teacher" in capsys.readouterr().err
    other = save_artifact(tmp_path / "other", make_teacher("tiny", "state"), "teacher", provenance={})
    assert main([*args, "--pair", str(other), str(one_step_dir)]) == 2
    assert "observe different things" in capsys.readouterr().err


# -- TensorRT -------------------------------------------------------------------------------


class _StaticProgram(torch.nn.Module):
    """What torch_tensorrt.compile returns, as far as the backend can tell: a module that only
    accepts the input shapes and dtypes it was built for (static batch-1 TensorRT programs)."""

    def __init__(self, module: torch.nn.Module, example: list[torch.Tensor]) -> None:
        super().__init__()
        self.inner = module
        self.signature = [(tuple(x.shape), x.dtype) for x in example]

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        called = [(tuple(x.shape), x.dtype) for x in args]
        assert called == self.signature, f"program built for {self.signature}, called with {called}"
        return self.inner(*args)


def fake_torch_tensorrt() -> types.ModuleType:
    """A stand-in for torch_tensorrt with its calls, so that the backend's own logic runs on a CPU."""
    fake = types.ModuleType("torch_tensorrt")
    fake.__version__ = "0.0+fake"
    fake.builds = 0
    programs: dict[str, _StaticProgram] = {}

    def compile(module, ir, arg_inputs, **settings):  # noqa: A001 - the real name
        assert ir == "dynamo" and "enabled_precisions" not in settings  # removed in torch-tensorrt 2.13
        fake.builds += 1
        return _StaticProgram(module, arg_inputs)

    def save(module, path, arg_inputs):
        token = f"program-{len(programs)}"
        programs[token] = module
        Path(path).write_text(token)

    fake.compile, fake.save = compile, save
    fake.load = lambda path: programs[Path(path).read_text()]
    fake.runtime = types.SimpleNamespace(enable_cudagraphs=contextlib.nullcontext)
    return fake


@pytest.mark.parametrize("fp16", [True, False], ids=["fp16", "fp32"])
def test_tensorrt_backend_plumbing_with_a_stand_in_compiler(tmp_path, monkeypatch, fp16) -> None:
    """Half casts, cache keys, build-once-then-load and the engine loop of the TensorRT backend, on a CPU."""
    fake = fake_torch_tensorrt()
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)
    monkeypatch.setattr(tensorrt_backend, "require_tensorrt", lambda device: None)
    monkeypatch.setattr(tensorrt_backend, "_gpu_keys", lambda device: {"gpu": "Fake GPU", "compute_capability": "9.0"})
    torch.manual_seed(0)  # one small camera keeps CPU half-precision convolutions quick
    config = DiffusionConfig(obs=ObservationSpec(low_dim={"agent_pos": 4}, cameras={"cam0": (3, 32, 32)}),
                             unet_preset="tiny", prediction_type="epsilon")
    teacher = DiffusionPolicy(config, stats()).eval()
    one_step = make_one_step(teacher, GeneratorSpec(timestep=65, skip_scale=0.1, out_scale=0.9))
    obs = observation(config)
    for kind, policy, sampler in (("teacher", teacher, {"steps": 2}), ("one-step", one_step, {})):
        path = (save_artifact(tmp_path / kind, policy, kind, provenance={}) if kind == "teacher"
                else save_one_step(tmp_path / kind, policy))
        meta = read_spec(path)
        builds = fake.builds
        backends = [tensorrt_backend.TensorRTBackend(policy, meta, torch.device("cpu"), fp16=fp16,
                                                     cuda_graphs=True, cache_dir=tmp_path / "cache") for _ in "ab"]
        assert fake.builds == builds + 2  # encoder + denoiser/generator, built once, then loaded from the cache
        assert [row["built"] for b in backends for row in b.cache_report] == [True, True, False, False]
        assert backends[0].float_dtype == (torch.float16 if fp16 else torch.float32)
        reference = Engine.load(path, backend="torch", seed=3, **sampler)(obs)
        for backend in backends:
            got = Engine(backend, meta, seed=3, **sampler)(obs)
            assert float(np.abs(got - reference).max()) <= (5e-2 if fp16 else 1e-5)


# -- TensorRT on a real GPU (CUDA + torch_tensorrt only) ------------------------------------


@pytest.fixture(scope="module")
def trt_artifacts(tmp_path_factory) -> tuple[Path, Path]:
    pytest.importorskip("torch_tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT needs a CUDA GPU")
    root = tmp_path_factory.mktemp("trt")
    teacher = make_teacher("small", "image")
    one_step = make_one_step(teacher, GeneratorSpec(timestep=100))
    return (save_artifact(root / "teacher", teacher, "teacher", provenance={}),
            save_one_step(root / "one_step", one_step))


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graphs", [False, True], ids=["plain", "cuda-graphs"])
def test_tensorrt_fp16_matches_torch_and_caches_its_programs(trt_artifacts, tmp_path, cuda_graphs) -> None:
    obs = observation(make_config("small", "image"))
    for path, sampler, tolerance in ((trt_artifacts[0], {"steps": 2}, 5e-2), (trt_artifacts[1], {}, 2e-2)):
        reference = Engine.load(path, backend="torch", device="cuda", seed=3, **sampler)
        trt = Engine.load(path, backend="tensorrt", device="cuda", seed=3, cache_dir=tmp_path, cuda_graphs=cuda_graphs,
                          **sampler)
        assert trt.backend.float_dtype == torch.float16
        assert all(row["built"] for row in trt.backend.cache_report)
        trt.warmup(3)
        for _ in range(3):  # the same noise on both: same seed, same CUDA generator
            expected, got = reference(obs), trt(obs)
            assert np.isfinite(got).all()
            assert float(np.abs(expected - got).max()) <= tolerance
        again = Engine.load(path, backend="tensorrt", device="cuda", seed=3, cache_dir=tmp_path, **sampler)
        assert not any(row["built"] for row in again.backend.cache_report)  # reused from the cache
        trt.reseed(3)
        np.testing.assert_allclose(again(obs), trt(obs), atol=1e-3)


@pytest.mark.gpu
def test_auto_prefers_tensorrt_on_a_gpu(trt_artifacts, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="sdm_controller.runtime")
    engine = Engine.load(trt_artifacts[1], device="cuda", cache_dir=tmp_path)
    assert engine.backend_name == "tensorrt" and "picked tensorrt" in caplog.text
