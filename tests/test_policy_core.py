"""The policy node's ROS-free core: observation history, conversions, chunk timing, blending, limits,
parameter validation, and whole inference cycles with fake and real engines."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from sdm_controller.bench.untrained_artifact import write_untrained_artifact
from sdm_controller.common import rejected
from sdm_controller.common.fr3 import FR3_JOINTS, JOINT_LIMITS
from sdm_controller.common.images import RawImage, centre_crop_to_aspect, decode_image, fit_image
from sdm_controller.common.joints import JointMapper
from sdm_controller.common.rejected import RejectedInput
from sdm_controller.control.blending import ChunkBlender, ensemble_weights
from sdm_controller.control.chunk import ActionChunk, finite_difference_velocities
from sdm_controller.control.controller import (
    DISABLED,
    ENGINE_ERROR,
    ERROR,
    JOINT_STATES,
    NO_NEW_OBSERVATION,
    NO_POLICY,
    OK,
    PUBLISHED,
    STALE,
    WAITING,
    PolicyController,
)
from sdm_controller.control.limits import JointLimits
from sdm_controller.control.observation import NotReady, ObservationBuffer
from sdm_controller.control.policy_interface import PolicyInterface, read_interface
from sdm_controller.control.settings import PARAMETERS, NodeSettings, SettingsError, check_settings
from sdm_controller.errors import ArtifactError
from sdm_controller.policy.observation_spec import ObservationSpec
from sdm_controller.runtime.artifact import ArtifactSpec, check_weights_header
from sdm_controller.runtime.backends.base import NonFiniteError

MS = 1_000_000
S = 1_000_000_000
T0 = 1_700_000_000 * S  # a realistic epoch stamp: float seconds would lose nanoseconds here
P = 100 * MS  # control period of the fake interface


def make_interface(cameras=None, state_names=None, **overrides) -> PolicyInterface:
    cameras = {"wrist": (8, 8), "scene": (8, 8)} if cameras is None else cameras
    state_names = {"joint_positions": ("j1", "j2", "j3")} if state_names is None else state_names
    fields = dict(
        artifact="fake",
        kind="one-step",
        observation=ObservationSpec(low_dim={k: len(v) for k, v in state_names.items()},
                                    cameras={name: (3, h, w) for name, (h, w) in cameras.items()}),
        state_names=state_names,
        action_names=("j1", "j2", "j3"),
        n_obs_steps=2,
        n_action_steps=6,
        control_period_s=0.1,
        num_train_timesteps=100,
        lower=(-1.0, -1.0, -1.0),
        upper=(1.0, 1.0, 1.0),
        velocity=(10.0, 10.0, 10.0),
    )
    fields.update(overrides)
    return PolicyInterface(**fields)


def rgb_image(h: int = 8, w: int = 8, value: int = 100) -> RawImage:
    return RawImage(h, w, "rgb8", w * 3, np.full(h * w * 3, value, np.uint8).tobytes())


# -- observation buffer ---------------------------------------------------------------------------
def make_buffer(n_obs_steps: int = 2, timeout_s: float = 0.5) -> ObservationBuffer:
    return ObservationBuffer(("state", "cam"), n_obs_steps, P, round(timeout_s * S), 50 * MS)


def test_window_is_aligned_by_stamps_not_arrival_order():
    buffer = make_buffer()
    now = T0 + 1 * S
    # joint states run ahead at 100 Hz; the camera frames arrive late and interleaved
    for i in range(40):
        stamp = T0 + 600 * MS + i * 10 * MS
        buffer.add("state", stamp, np.array([i], np.float32), now)
    for stamp in (T0 + 620 * MS, T0 + 720 * MS, T0 + 820 * MS):
        buffer.add("cam", stamp, np.array([stamp], np.int64), now)
    window = buffer.window(now)
    # reference = the oldest newest stamp = the last camera frame; it is the chunk's stamp
    assert window.stamp_ns == T0 + 820 * MS
    assert window.sample_stamps["cam"] == (T0 + 720 * MS, T0 + 820 * MS)
    # state frames: latest sample at or before 820 ms and 720 ms (not the newest state at 990 ms)
    assert window.sample_stamps["state"] == (T0 + 720 * MS, T0 + 820 * MS)
    np.testing.assert_array_equal(window.arrays["state"][:, 0], [12, 22])
    assert window.arrays["cam"].shape == (2, 1)


def test_window_takes_latest_sample_at_or_before_each_slot():
    buffer = make_buffer(n_obs_steps=3)
    now = T0 + 1300 * MS
    for ms in (1000, 1030, 1095, 1130, 1190, 1300):
        buffer.add("state", T0 + ms * MS, np.array([ms], np.float32), now)
        buffer.add("cam", T0 + ms * MS, np.array([ms], np.float32), now)
    window = buffer.window(now)
    # slots 1300, 1200, 1100 -> samples 1300, 1190, 1095 (oldest first)
    np.testing.assert_array_equal(window.arrays["state"][:, 0], [1095, 1190, 1300])


def test_silent_camera_makes_the_window_stale():
    buffer = make_buffer(timeout_s=0.3)
    for ms in range(0, 400, 50):
        buffer.add("cam", T0 + ms * MS, np.zeros(1), T0 + ms * MS)
    for ms in range(0, 1000, 10):  # joints keep streaming, the camera stopped at 350 ms
        buffer.add("state", T0 + ms * MS, np.zeros(1), T0 + ms * MS)
    with pytest.raises(NotReady) as info:
        buffer.window(T0 + 1000 * MS)
    assert info.value.reason == STALE and "'cam'" in str(info.value)


def test_window_waits_for_enough_history():
    buffer = make_buffer()
    with pytest.raises(NotReady) as info:
        buffer.window(T0)
    assert info.value.reason == WAITING
    buffer.add("state", T0, np.zeros(1), T0)
    buffer.add("cam", T0, np.zeros(1), T0)
    with pytest.raises(NotReady) as info:  # one frame, two observation steps needed
        buffer.window(T0 + 10 * MS)
    assert info.value.reason == WAITING


def test_window_with_a_gap_in_history_is_stale():
    buffer = make_buffer(n_obs_steps=3, timeout_s=0.25)
    for ms in (1000, 1600, 1700):
        buffer.add("state", T0 + ms * MS, np.zeros(1), T0 + ms * MS)
        buffer.add("cam", T0 + ms * MS, np.zeros(1), T0 + ms * MS)
    with pytest.raises(NotReady) as info:  # the slot at 1500 ms falls back to the 1000 ms sample
        buffer.window(T0 + 1750 * MS)
    assert info.value.reason == STALE and "gap" in str(info.value)


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        (T0 + 200 * MS, rejected.STAMP_FUTURE),  # 100 ms ahead, tolerance 50 ms
        (T0 - 600 * MS, rejected.STAMP_STALE),  # older than the 0.5 s timeout
        (T0 + 100 * MS, rejected.STAMP_NOT_INCREASING),  # duplicate of the last sample
        (T0 + 50 * MS, rejected.STAMP_NOT_INCREASING),  # going backwards
    ],
)
def test_bad_stamps_are_refused(stamp, reason):
    buffer = make_buffer()
    now = T0 + 100 * MS
    buffer.add("state", T0 + 100 * MS, np.zeros(1), now)
    with pytest.raises(RejectedInput) as info:
        buffer.add("state", stamp, np.ones(1), now)
    assert info.value.reason == reason
    assert buffer.newest_stamp("state") == T0 + 100 * MS


def test_clock_jumping_back_forgets_future_samples():
    buffer = make_buffer()
    buffer.add("state", T0 + 5 * S, np.zeros(1), T0 + 5 * S)
    # the node's clock restarted (simulation reset): the old sample is now in the future
    buffer.add("state", T0 + 100 * MS, np.ones(1), T0 + 100 * MS)
    assert buffer.newest_stamp("state") == T0 + 100 * MS


def test_add_many_is_all_or_nothing():
    buffer = ObservationBuffer(("a", "b"), 1, P, S, 50 * MS)
    buffer.add("a", T0, np.zeros(1), T0)
    with pytest.raises(RejectedInput):
        buffer.add_many({"a": np.zeros(1), "b": np.zeros(1)}, T0, T0)
    assert buffer.newest_stamp("b") is None


def test_buffer_keeps_only_the_needed_history():
    buffer = ObservationBuffer(("a",), 2, P, 500 * MS, 50 * MS)
    for i in range(2000):
        buffer.add("a", T0 + i * MS, np.zeros(1), T0 + i * MS)
    stamps = buffer._streams["a"].stamps
    assert len(stamps) < 1200 and stamps[-1] == T0 + 1999 * MS


# -- images ---------------------------------------------------------------------------------------
def _pattern(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_decode_rgb8_and_bgr8():
    rgb = _pattern(4, 5)
    out = decode_image(RawImage(4, 5, "rgb8", 15, rgb.tobytes()))
    np.testing.assert_array_equal(out, rgb)
    out = decode_image(RawImage(4, 5, "bgr8", 15, rgb[..., ::-1].copy().tobytes()))
    np.testing.assert_array_equal(out, rgb)


def test_decode_with_row_padding():
    rgb = _pattern(3, 5)
    padded = np.zeros((3, 20), np.uint8)
    padded[:, :15] = rgb.reshape(3, 15)
    out = decode_image(RawImage(3, 5, "rgb8", 20, padded.tobytes()))
    np.testing.assert_array_equal(out, rgb)


def test_decode_rgba_bgra_mono():
    rgb = _pattern(2, 3)
    rgba = np.concatenate([rgb, np.full((2, 3, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(decode_image(RawImage(2, 3, "rgba8", 12, rgba.tobytes())), rgb)
    bgra = np.concatenate([rgb[..., ::-1], np.full((2, 3, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_array_equal(decode_image(RawImage(2, 3, "bgra8", 12, bgra.tobytes())), rgb)
    gray = rgb[..., 0].copy()
    out = decode_image(RawImage(2, 3, "mono8", 3, gray.tobytes()))
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[..., 0], gray)
    np.testing.assert_array_equal(out[..., 2], gray)


@pytest.mark.parametrize("bigendian", [False, True])
def test_decode_mono16_keeps_the_high_byte(bigendian):
    values = np.array([[0, 256, 65535]], dtype=">u2" if bigendian else "<u2")
    out = decode_image(RawImage(1, 3, "mono16", 6, values.tobytes(), is_bigendian=bigendian))
    np.testing.assert_array_equal(out[0, :, 0], [0, 1, 255])


@pytest.mark.parametrize(
    ("image", "reason"),
    [
        (RawImage(4, 4, "yuv422", 8, bytes(32)), rejected.BAD_ENCODING),
        (RawImage(4, 4, "32FC1", 16, bytes(64)), rejected.BAD_ENCODING),
        (RawImage(4, 4, "rgb8", 12, b""), rejected.EMPTY_DATA),
        (RawImage(0, 4, "rgb8", 12, bytes(12)), rejected.EMPTY_DATA),
        (RawImage(4, 4, "rgb8", 12, bytes(47)), rejected.BAD_SIZE),  # truncated
        (RawImage(4, 4, "rgb8", 12, bytes(49)), rejected.BAD_SIZE),  # too long
        (RawImage(4, 4, "rgb8", 10, bytes(40)), rejected.BAD_SIZE),  # step < width * 3
        (RawImage(4, 4, "mono8", 4, bytes(48)), rejected.BAD_SIZE),  # rgb data labelled mono8
    ],
)
def test_bad_images_are_refused(image, reason):
    with pytest.raises(RejectedInput) as info:
        decode_image(image)
    assert info.value.reason == reason


def test_fit_image_crops_to_aspect_then_resizes_with_area():
    image = _pattern(48, 64)
    cropped = centre_crop_to_aspect(image, 32, 32)
    assert cropped.shape == (48, 48, 3)
    np.testing.assert_array_equal(cropped, image[:, 8:56])
    out = fit_image(image, 32, 32)
    expected = cv2.resize(np.ascontiguousarray(image[:, 8:56]), (32, 32), interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(out, expected)
    assert fit_image(image, 48, 64) is image  # right size: untouched
    tall = _pattern(100, 40)
    assert centre_crop_to_aspect(tall, 10, 20).shape == (20, 40, 3)
    assert fit_image(tall, 10, 20).shape == (10, 20, 3)


# -- joints ---------------------------------------------------------------------------------------
def test_joints_are_mapped_by_name():
    mapper = JointMapper({"arm": ("a", "b", "c"), "grip": ("g",)})
    out = mapper.map(["g", "c", "x", "a", "b"], [0.5, 3.0, 99.0, 1.0, 2.0])  # reordered + extra
    np.testing.assert_array_equal(out["arm"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(out["grip"], [0.5])
    assert out["arm"].dtype == np.float32
    assert mapper.extra_names(["g", "c", "x", "a", "b"]) == ["x"]
    out = mapper.map(["a", "b", "c", "g"], [1, 2, 3, 4])  # order changes between messages
    np.testing.assert_array_equal(out["arm"], [1, 2, 3])


@pytest.mark.parametrize(
    ("names", "positions", "reason"),
    [
        (["a", "b"], [1.0, 2.0], rejected.MISSING_JOINTS),
        (["a", "b", "c"], [1.0, math.nan, 3.0], rejected.NON_FINITE),
        (["a", "b", "c"], [1.0, 2.0, math.inf], rejected.NON_FINITE),
        (["a", "b", "c"], [1.0, 2.0], rejected.MALFORMED),
        (["a", "b", "c", "a"], [1.0, 2.0, 3.0, 4.0], rejected.MALFORMED),
    ],
)
def test_bad_joint_states_are_refused(names, positions, reason):
    with pytest.raises(RejectedInput) as info:
        JointMapper({"arm": ("a", "b", "c")}).map(names, positions)
    assert info.value.reason == reason


def test_nan_in_an_unused_joint_is_fine():
    out = JointMapper({"arm": ("a",)}).map(["a", "other"], [1.0, math.nan])
    np.testing.assert_array_equal(out["arm"], [1.0])


# -- chunk timing ---------------------------------------------------------------------------------
def test_chunk_timing_convention():
    actions = np.arange(12, dtype=np.float32).reshape(4, 3)
    chunk = ActionChunk.from_actions(actions, T0 + 123, P, ("a", "b", "c"))
    np.testing.assert_array_equal(chunk.time_from_start_ns, [P, 2 * P, 3 * P, 4 * P])
    np.testing.assert_array_equal(np.diff(chunk.due_ns), [P] * 3)
    assert chunk.due_ns[0] == T0 + 123 + P
    later = chunk.due_after(T0 + 123 + 2 * P)  # points due at +1P and +2P have passed
    assert later.offset == 2 and len(later) == 2
    np.testing.assert_array_equal(later.time_from_start_ns, [3 * P, 4 * P])
    np.testing.assert_array_equal(later.reference, actions[1])
    assert chunk.due_after(T0 + 10 * S) is None


def test_velocities_are_finite_differences_with_last_zero():
    positions = np.array([[0.0], [0.1], [0.3], [0.6]])
    v = finite_difference_velocities(positions, 0.1)
    np.testing.assert_allclose(v[:, 0], [1.0, 1.5, 2.5, 0.0])
    v = finite_difference_velocities(positions, 0.1, reference=np.array([-0.1]))
    np.testing.assert_allclose(v[0], [1.0])  # central: (0.1 - (-0.1)) / 0.2
    assert finite_difference_velocities(np.array([[1.0, 2.0]]), 0.1).tolist() == [[0.0, 0.0]]


def test_position_at_interpolates_and_holds():
    chunk = ActionChunk(T0, P, ("a",), np.array([[1.0], [3.0]]), reference=np.array([0.0]))
    assert chunk.position_at(T0)[0] == 0.0  # reference, one period before point 0
    assert chunk.position_at(T0 + P + P // 2)[0] == pytest.approx(2.0)
    assert chunk.position_at(T0 + 10 * S)[0] == 3.0


# -- blending -------------------------------------------------------------------------------------
def constant_chunk(stamp: int, value: float, n: int = 6) -> ActionChunk:
    return ActionChunk.from_actions(np.full((n, 1), value), stamp, P, ("a",))


def test_blending_off_publishes_the_prediction():
    blender = ChunkBlender("off")
    out = blender.blend(constant_chunk(T0, 1.0), 4, T0)
    assert len(out) == 4 and (out.positions == 1.0).all()
    out = blender.blend(constant_chunk(T0 + P, 2.0), 4, T0 + P)
    assert (out.positions == 2.0).all()


def test_blending_latest_only_drops_points_already_due():
    blender = ChunkBlender("latest-only")
    out = blender.blend(constant_chunk(T0, 1.0), 4, now_ns=T0 + 2 * P + 1)
    np.testing.assert_array_equal(out.time_from_start_ns, [3 * P, 4 * P])
    assert blender.blend(constant_chunk(T0, 1.0), 4, now_ns=T0 + 5 * P) is None


def test_blending_exponential_weights_older_predictions():
    m = 0.7
    blender = ChunkBlender("exponential", m)
    first = blender.blend(constant_chunk(T0, 0.0), 4, T0)
    assert (first.positions == 0.0).all()
    second = blender.blend(constant_chunk(T0 + P, 1.0), 4, T0 + P)
    w = ensemble_weights(2, m)  # oldest first
    assert w[0] > w[1] and w.sum() == pytest.approx(1.0)
    # the first chunk (6 points, due T0+1P..T0+6P) covers the second's points due T0+2P..T0+5P
    np.testing.assert_allclose(second.positions[:, 0], [w[1]] * 4)
    third = blender.blend(constant_chunk(T0 + 2 * P, 2.0), 5, T0 + 2 * P)
    w3 = ensemble_weights(3, m)
    # due T0+3P..T0+6P: all three chunks; due T0+7P: only the second and the third
    np.testing.assert_allclose(third.positions[:4, 0], [w3[1] * 1.0 + w3[2] * 2.0] * 4)
    w2 = ensemble_weights(2, m)
    np.testing.assert_allclose(third.positions[4, 0], w2[0] * 1.0 + w2[1] * 2.0)


def test_blending_exponential_zero_coefficient_is_the_mean_and_unaligned_stamps_interpolate():
    blender = ChunkBlender("exponential", 0.0)
    ramp = ActionChunk.from_actions(np.arange(6, dtype=float)[:, None], T0, P, ("a",))  # value k at T0+(k+1)P
    blender.blend(ramp, 6, T0)
    out = blender.blend(constant_chunk(T0 + P // 2, 10.0), 2, T0 + P)
    # due T0+1.5P: the ramp gives 0.5; mean with 10
    np.testing.assert_allclose(out.positions[:, 0], [(0.5 + 10) / 2, (1.5 + 10) / 2])


def test_blender_forgets_chunks_that_ended():
    blender = ChunkBlender("exponential", 0.0)
    blender.blend(constant_chunk(T0, 5.0, n=2), 2, T0)
    out = blender.blend(constant_chunk(T0 + 10 * P, 1.0), 2, T0 + 10 * P)
    assert (out.positions == 1.0).all()


# -- limits ---------------------------------------------------------------------------------------
def test_limits_clamp_positions_and_steps_from_the_reference():
    limits = JointLimits(np.array([-1.0, -1.0]), np.array([1.0, 1.0]), np.array([1.0, 100.0]), max_step=0.3)
    # joint 0: velocity 1 rad/s -> 0.1 per 0.1 s period; joint 1: max_step 0.3
    positions = np.array([[0.5, 0.5], [0.5, 2.0], [0.5, 2.0]])
    out, counts = limits.apply(positions, 0.1, reference=np.array([0.0, 0.0]))
    np.testing.assert_allclose(out[:, 0], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(out[:, 1], [0.3, 0.6, 0.9])
    assert counts.step == 6 and counts.position == 0
    out, counts = limits.apply(np.array([[5.0, -5.0]]), 0.1)  # no reference: only positions
    np.testing.assert_array_equal(out, [[1.0, -1.0]])
    assert counts.position == 2 and counts.step == 0


def test_limits_position_wins_over_step_and_nan_reference_is_unbounded():
    limits = JointLimits(np.array([0.0, -1.0]), np.array([1.0, 1.0]), np.array([np.inf, np.inf]), max_step=0.1)
    out, counts = limits.apply(np.array([[0.5, 0.9]]), 0.1, reference=np.array([2.0, np.nan]))
    np.testing.assert_array_equal(out, [[1.0, 0.9]])  # joint 0 pulled inside; joint 1 free (not observed)
    assert counts.position == 1 and counts.step == 1


def test_limits_clip_velocities():
    limits = JointLimits(np.array([-1.0]), np.array([1.0]), np.array([0.5]))
    v, n = limits.clip_velocities(np.array([[1.0], [-0.2], [-3.0]]), 0.1)
    np.testing.assert_allclose(v[:, 0], [0.5, -0.2, -0.5])
    assert n == 2


# -- settings -------------------------------------------------------------------------------------
def test_every_parameter_has_a_description_and_a_setting():
    names = {spec.name for spec in PARAMETERS}
    assert names == set(NodeSettings.__dataclass_fields__)
    for spec in PARAMETERS:
        assert len(spec.description) > 20
        assert type(spec.default) is type(getattr(NodeSettings(), spec.name))


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"inference_rate_hz": 0.0}, "inference_rate_hz"),
        ({"inference_rate_hz": 1000.0}, "[0.1, 200.0]"),
        ({"inference_rate_hz": math.nan}, "finite"),
        ({"executed_steps": -1}, "executed_steps"),
        ({"executed_steps": 2.5}, "integer"),
        ({"blending": "average"}, "'off', 'exponential', 'latest-only'"),
        ({"backend": "tensorflow"}, "backend"),
        ({"device": "gpu0"}, "cuda:N"),
        ({"enabled": 1}, "true or false"),
        ({"max_step_rad": 0.0}, "max_step_rad"),
        ({"joint_position_lower": ["a"]}, "numbers"),
        ({"joint_velocity_limit": [1.0, math.inf]}, "finite"),
    ],
)
def test_settings_refuse_bad_values(changes, words):
    with pytest.raises(SettingsError) as info:
        NodeSettings().updated(changes)
    assert words in str(info.value)


def test_settings_accept_good_values_and_ignore_foreign_parameters():
    settings = NodeSettings().updated(
        {"inference_rate_hz": 20, "blending": "exponential", "joint_position_lower": [0, 1], "use_sim_time": True}
    )
    assert settings.inference_rate_hz == 20.0 and isinstance(settings.inference_rate_hz, float)
    assert settings.joint_position_lower == (0.0, 1.0)
    assert settings.changed(NodeSettings()) == ["inference_rate_hz", "blending", "joint_position_lower"]


def test_check_settings_against_the_artifact():
    interface = make_interface()
    resolved = check_settings(NodeSettings(), interface)
    assert resolved.executed_steps == 6
    np.testing.assert_array_equal(resolved.limits.upper, [1, 1, 1])
    resolved = check_settings(NodeSettings(executed_steps=3, joint_position_upper=(0.5, 0.5, 0.5)), interface)
    assert resolved.executed_steps == 3
    np.testing.assert_array_equal(resolved.limits.upper, [0.5, 0.5, 0.5])
    bad = [
        (NodeSettings(executed_steps=7), "predicts 6 actions"),
        (NodeSettings(joint_position_lower=(0.0, 0.0)), "has 2 values"),
        (NodeSettings(joint_position_lower=(2.0, 0.0, 0.0)), "lower >= upper for ['j1']"),
        (NodeSettings(joint_velocity_limit=(1.0, 0.0, 1.0)), "positive"),
    ]
    for settings, words in bad:
        with pytest.raises(SettingsError, match=None) as info:
            check_settings(settings, interface)
        assert words in str(info.value)
    no_limits = make_interface(lower=None, upper=None)
    with pytest.raises(SettingsError, match="no joint position limits"):
        check_settings(NodeSettings(), no_limits)
    teacher = make_interface(kind="teacher", num_train_timesteps=50)
    with pytest.raises(SettingsError, match="50 diffusion steps"):
        check_settings(NodeSettings(sampler_steps=60), teacher)


def test_the_sampler_is_part_of_a_teachers_engine_but_not_of_a_one_step_one() -> None:
    from sdm_controller.control.settings import SAMPLER_METHODS
    from sdm_controller.policy.noise_schedule import SAMPLERS

    assert set(SAMPLER_METHODS) == set(SAMPLERS)  # every sampler the engine knows, and no other
    ddim, ddpm = NodeSettings(sampler_steps=100), NodeSettings().updated({"sampler": "ddpm", "sampler_steps": 100})
    assert ddim.engine_key("teacher") != ddpm.engine_key("teacher")
    assert ddim.engine_key("one-step") == ddpm.engine_key("one-step")
    with pytest.raises(SettingsError, match="sampler"):
        NodeSettings().updated({"sampler": "euler"})


# -- artifacts and the interface contract ---------------------------------------------------------
@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    folder = tmp_path_factory.mktemp("art") / "fr3"
    return write_untrained_artifact(folder, cameras=("wrist", "scene"), image_size=(16, 16))


def test_test_artifact_follows_the_contract(artifact):
    interface = read_interface(artifact)
    assert interface.kind == "one-step"
    assert interface.action_names == FR3_JOINTS
    assert interface.state_names == {"joint_positions": FR3_JOINTS}
    assert interface.cameras == {"wrist": (16, 16), "scene": (16, 16)}
    assert interface.control_period_s == pytest.approx(0.1)
    assert interface.upper[3] == JOINT_LIMITS["fr3_joint4"][1]
    assert interface.measured_action_index()[7] == ("joint_positions", 7)


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        (lambda m: m["observation"].pop("state_names"), "state_names"),
        (lambda m: m["observation"]["state_names"]["joint_positions"].pop(), "has 7 names"),
        (lambda m: m["action"].update(space="ee_delta"), "action.space 'ee_delta'"),
        (lambda m: m["action"].update(names=["a"] * 8), "repeats"),
        (lambda m: m.update(control_period_s=None), "control_period_s"),
        (lambda m: m["action"]["limits"].update(lower=[0.0]), "action.limits.lower"),
    ],
)
def test_interface_refuses_artifacts_outside_the_contract(artifact, tmp_path, patch, words):
    meta = json.loads((artifact / "policy.json").read_text())
    patch(meta)
    with pytest.raises(ArtifactError) as info:
        PolicyInterface.from_spec(ArtifactSpec.from_json(meta, tmp_path))
    assert words in str(info.value)


def test_quick_artifact_check_catches_what_would_not_load(artifact, tmp_path):
    import shutil

    def verify_artifact(path: str, meta: dict) -> None:
        check_weights_header(ArtifactSpec.from_json(meta, path))

    meta = json.loads((artifact / "policy.json").read_text())
    verify_artifact(str(artifact), meta)
    broken = json.loads(json.dumps(meta))
    broken["policy"]["unet_width"] = 3
    with pytest.raises(ArtifactError, match="policy config"):
        verify_artifact(str(artifact), broken)
    broken = json.loads(json.dumps(meta))
    broken["weights"]["tensors"]["unet.extra"] = [1]
    with pytest.raises(ArtifactError, match="do not match"):
        verify_artifact(str(artifact), broken)
    copy = shutil.copytree(artifact, tmp_path / "truncated")
    weights = copy / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        verify_artifact(str(copy), meta)


def test_missing_artifact_is_an_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        read_interface(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="no artifact is set"):
        read_interface("")


# -- controller -----------------------------------------------------------------------------------
class FakeRunner:
    """Actions = the newest joint positions + 0.01 * (k + 1): a slow ramp the limits let through."""

    backend_name = "fake"

    def __init__(self, n_action_steps: int = 6, nan: bool = False) -> None:
        self.n, self.nan = n_action_steps, nan
        self.last_timing = {"total_ms": 1.0}
        self.calls, self.closed = [], False

    def __call__(self, obs):
        self.calls.append(obs)
        if self.nan:
            raise NonFiniteError("the policy produced NaN or inf actions")
        newest = obs["joint_positions"][-1].astype(np.float64)
        return (newest + 0.01 * np.arange(1, self.n + 1)[:, None]).astype(np.float32)

    def close(self):
        self.closed = True


def feed(controller: PolicyController, stamp: int, now: int | None = None, cameras=("wrist", "scene"),
         names=("j3", "j1", "j2", "extra"), positions=(0.3, 0.1, 0.2, 9.0)):
    now = stamp if now is None else now
    for camera in cameras:
        assert controller.add_frame(camera, stamp, rgb_image(16, 16), now) is None
    return controller.add_joint_state(stamp, list(names), np.array(positions), now)


def running_controller(settings: NodeSettings | None = None, runner=None, interface=None):
    controller = PolicyController(settings or NodeSettings())
    controller.request_policy(runner or FakeRunner(), interface or make_interface())
    result = controller.step(T0)
    assert result.status == WAITING and result.swapped is not None
    return controller


def test_cycle_publishes_a_timed_limited_chunk():
    controller = running_controller()
    for i in range(4):
        feed(controller, T0 + i * 50 * MS)
    result = controller.step(T0 + 160 * MS)
    assert result.status == PUBLISHED
    chunk = result.chunk
    assert chunk.stamp_ns == T0 + 150 * MS  # the newest observation used
    assert chunk.names == ("j1", "j2", "j3")
    np.testing.assert_array_equal(chunk.time_from_start_ns, (np.arange(6) + 1) * P)
    np.testing.assert_allclose(chunk.positions[0], [0.11, 0.21, 0.31], atol=1e-6)  # mapped by name
    np.testing.assert_allclose(chunk.velocities[0], [0.1, 0.1, 0.1], atol=1e-5)  # central from the measured ref
    assert (chunk.velocities[-1] == 0).all()
    obs = controller.policy.runner.calls[-1]
    assert obs["wrist"].shape == (2, 8, 8, 3) and obs["wrist"].dtype == np.uint8  # resized to the artifact
    assert controller.step(T0 + 170 * MS).status == NO_NEW_OBSERVATION


def test_new_observation_means_every_stream_moved_past_the_last_chunk():
    controller = running_controller()
    assert not controller.has_new_observation()  # nothing received yet
    for i in range(4):
        feed(controller, T0 + i * 50 * MS)
    assert controller.has_new_observation()
    assert controller.step(T0 + 160 * MS).status == PUBLISHED
    assert not controller.has_new_observation()  # that window has been used
    controller.add_frame("wrist", T0 + 200 * MS, rgb_image(16, 16), T0 + 200 * MS)
    assert not controller.has_new_observation()  # the other camera and the joints have not moved yet
    feed(controller, T0 + 210 * MS, cameras=("scene",))
    assert controller.has_new_observation()


def test_cycle_limits_steps_from_the_last_commanded_point():
    settings = NodeSettings(max_step_rad=0.005)
    controller = running_controller(settings)
    for i in range(4):
        feed(controller, T0 + i * 50 * MS)
    chunk = controller.step(T0 + 160 * MS).chunk
    measured = np.array([0.1, 0.2, 0.3], np.float32).astype(np.float64)
    steps = np.abs(np.diff(np.vstack([measured, chunk.positions]), axis=0))
    assert steps.max() <= 0.005 + 1e-9
    assert controller.clamps.step > 0
    feed(controller, T0 + 200 * MS)
    second = controller.step(T0 + 210 * MS).chunk
    # continuity: the first point is within one step of what the previous chunk commanded a period before
    previous = chunk.position_at(int(second.due_ns[0]) - P)
    assert np.abs(second.positions[0] - previous).max() <= 0.005 + 1e-9


def test_bad_inputs_are_counted_and_build_no_chunk():
    controller = running_controller()
    for i in range(3):
        feed(controller, T0 + i * 50 * MS)
    refused = feed(controller, T0 + 150 * MS, positions=(0.3, math.nan, 0.2, 0.0))
    assert refused.reason == rejected.NON_FINITE
    bad = RawImage(16, 16, "rgb8", 48, bytes(100))
    assert controller.add_frame("wrist", T0 + 200 * MS, bad, T0 + 200 * MS).reason == rejected.BAD_SIZE
    assert controller.rejected["joint_states non_finite"] == 1
    assert controller.rejected["wrist bad_size"] == 1
    # joints stop at 100 ms (the NaN message was refused): the window ends there, and goes stale
    result = controller.step(T0 + 160 * MS)
    assert result.status == PUBLISHED and result.chunk.stamp_ns == T0 + 100 * MS
    result = controller.step(T0 + 700 * MS)
    assert result.status == STALE and result.chunk is None
    report = dict(controller.report(T0 + 700 * MS).values)
    assert report["rejected joint_states non_finite"] == "1"
    assert report["rejected wrist bad_size"] == "1"


def test_engine_nan_is_counted_and_publishes_nothing():
    controller = running_controller(runner=FakeRunner(nan=True))
    for i in range(3):
        feed(controller, T0 + i * 50 * MS)
    result = controller.step(T0 + 110 * MS)
    assert result.status == ENGINE_ERROR and result.chunk is None
    assert controller.rejected["engine NonFiniteError"] == 1
    assert controller.chunks_published == 0


def test_settings_apply_at_the_next_cycle_and_disable():
    controller = running_controller()
    for i in range(3):
        feed(controller, T0 + i * 50 * MS)
    controller.request_settings(NodeSettings(executed_steps=2))
    assert len(controller.step(T0 + 110 * MS).chunk) == 2
    controller.request_settings(NodeSettings(enabled=False))
    feed(controller, T0 + 150 * MS)
    assert controller.step(T0 + 160 * MS).status == DISABLED
    report = controller.report(T0 + 160 * MS)
    assert report.level == OK and "disabled" in report.message


def test_swap_keeps_the_history_when_the_observations_match():
    controller = running_controller()
    for i in range(3):
        feed(controller, T0 + i * 50 * MS)
    old = controller.policy.runner
    new = FakeRunner()
    controller.request_policy(new, make_interface(artifact="other"))
    result = controller.step(T0 + 110 * MS)
    assert result.swapped.artifact == "other" and result.status == PUBLISHED  # no gap: history kept
    assert old.closed and controller.policy.runner is new
    controller.request_policy(FakeRunner(), make_interface(cameras={"wrist": (8, 8)}))
    assert controller.step(T0 + 120 * MS).status == WAITING  # new streams: history starts over


def test_report_without_policy_shows_the_error():
    controller = PolicyController()
    assert controller.step(T0).status == NO_POLICY
    controller.error = "cannot run artifact '/nope': it does not exist"
    report = controller.report(T0)
    assert report.level == ERROR and "/nope" in report.message


def test_input_rates_and_ages_in_the_report():
    controller = running_controller()
    for i in range(11):
        feed(controller, T0 + i * 50 * MS)
    values = dict(controller.report(T0 + 520 * MS, {"wrist": "/wrist/image_raw"}).values)
    assert float(values["input /wrist/image_raw rate_hz"]) == pytest.approx(20.0, rel=0.1)
    assert float(values[f"input {JOINT_STATES} age_s"]) == pytest.approx(0.02, abs=1e-6)


# -- with the real engine -------------------------------------------------------------------------
def test_real_engine_cycle_on_a_test_artifact(artifact):
    from sdm_controller.control.runner import load_runner

    settings = NodeSettings(artifact=str(artifact))
    runner = load_runner(settings)
    interface = read_interface(artifact)
    controller = PolicyController(settings)
    controller.request_policy(runner, interface)
    assert controller.step(T0).swapped == interface
    home = [0.0, 0.0, 0.0, -1.5, 0.0, 1.8, 0.0, 0.02]
    for i in range(3):
        stamp = T0 + i * 50 * MS
        for camera in ("wrist", "scene"):
            image = RawImage(48, 64, "bgr8", 192, _pattern(48, 64).tobytes())
            assert controller.add_frame(camera, stamp, image, stamp) is None
        assert controller.add_joint_state(stamp, list(reversed(FR3_JOINTS)), home[::-1], stamp) is None
    result = controller.step(T0 + 110 * MS)
    assert result.status == PUBLISHED, result.message
    chunk = result.chunk
    assert chunk.positions.shape == (8, 8) and chunk.names == FR3_JOINTS
    lower, upper = np.array(interface.lower), np.array(interface.upper)
    assert ((chunk.positions >= lower) & (chunk.positions <= upper)).all()
    bound = np.minimum(0.1, np.array(interface.velocity) * 0.1)
    steps = np.abs(np.diff(np.vstack([home, chunk.positions]), axis=0))
    assert (steps <= bound + 1e-9).all()
    assert runner.backend_name == "torch"
    controller.close()
