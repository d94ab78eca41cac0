"""Network building blocks: UNet, ResNet trunk, crops, observation encoder, config checks."""

from __future__ import annotations

import pytest
import torch

from sdm_controller.errors import ConfigError
from sdm_controller.policy.conditional_unet1d import ConditionalUnet1D
from sdm_controller.policy.configuration_diffusion import UNET_PRESETS, DiffusionConfig, ObservationSpec
from sdm_controller.policy.convnet import ConvNetEncoder
from sdm_controller.policy.encoders import ObservationEncoder, crop_images
from sdm_controller.policy.resnet import ResNet18Encoder

# -- ConditionalUnet1D -------------------------------------------------------------------------


@pytest.mark.parametrize("preset", sorted(UNET_PRESETS))
def test_unet_output_shape_for_every_preset(preset):
    torch.manual_seed(0)
    batch, horizon, action_dim, cond_dim = 2, 8, 4, 16
    unet = ConditionalUnet1D(action_dim, cond_dim, down_dims=UNET_PRESETS[preset]).eval()
    with torch.no_grad():
        sample, cond = torch.randn(batch, horizon, action_dim), torch.randn(batch, cond_dim)
        out = unet(sample, torch.tensor([0, 57]), cond)
    assert out.shape == (batch, horizon, action_dim)
    assert torch.isfinite(out).all()


def test_unet_accepts_scalar_timestep_and_other_horizons():
    torch.manual_seed(0)
    unet = ConditionalUnet1D(3, 5, down_dims=UNET_PRESETS["tiny"]).eval()
    with torch.no_grad():
        out = unet(torch.randn(4, 16, 3), torch.tensor(7), torch.randn(4, 5))
    assert out.shape == (4, 16, 3)


def test_unet_film_conditioning_changes_output():
    torch.manual_seed(0)
    unet = ConditionalUnet1D(4, 10, down_dims=UNET_PRESETS["tiny"]).eval()
    x = torch.randn(1, 8, 4).repeat(2, 1, 1)
    t = torch.tensor([30, 30])
    cond = torch.randn(2, 10)
    with torch.no_grad():
        out = unet(x, t, cond)
        same = unet(x, t, cond[:1].repeat(2, 1))
    # Identical inputs except the global condition → different outputs.
    assert (out[0] - out[1]).abs().max() > 1e-4
    # Identical condition → identical outputs (the difference above comes from cond only).
    torch.testing.assert_close(same[0], same[1])


def test_unet_timestep_changes_output():
    torch.manual_seed(0)
    unet = ConditionalUnet1D(4, 10, down_dims=UNET_PRESETS["tiny"]).eval()
    x = torch.randn(1, 8, 4).repeat(2, 1, 1)
    cond = torch.randn(1, 10).repeat(2, 1)
    with torch.no_grad():
        out = unet(x, torch.tensor([1, 90]), cond)
    assert (out[0] - out[1]).abs().max() > 1e-4


# -- ResNet18Encoder ---------------------------------------------------------------------------


def test_resnet_output_shape_and_keypoints_in_unit_box():
    torch.manual_seed(0)
    encoder = ResNet18Encoder(feature_dim=32).eval()
    images = torch.rand(3, 3, 40, 48)
    with torch.no_grad():
        features = encoder(images)
    assert features.shape == (3, 32)
    assert features.min() >= -1.0 and features.max() <= 1.0
    # Keypoints of different images differ (the features are not constant).
    assert (features[0] - features[1]).abs().max() > 0


def test_spatial_softmax_keypoints_stay_in_unit_box_for_extreme_maps():
    encoder = ResNet18Encoder(feature_dim=8)
    pool = encoder.pool
    with torch.no_grad():
        pool.proj.weight.mul_(1000.0)  # near one-hot attention: keypoints at the grid corners
        out = pool(torch.randn(2, 512, 5, 7) * 10)
    assert out.shape == (2, 8)
    assert torch.isfinite(out).all()
    assert out.min() >= -1.0 - 1e-6 and out.max() <= 1.0 + 1e-6


def test_resnet_rejects_odd_feature_dim():
    with pytest.raises(ValueError, match="even"):
        ResNet18Encoder(feature_dim=33)


def test_convnet_encoder_follows_a_moving_blob():
    """The small encoder keeps position: a bright square moved across the image moves the keypoints."""
    torch.manual_seed(0)
    encoder = ConvNetEncoder(feature_dim=16).eval()
    images = torch.zeros(2, 3, 48, 48)
    images[0, :, 4:12, 4:12] = 1.0
    images[1, :, 36:44, 36:44] = 1.0
    with torch.no_grad():
        features = encoder(images)
    assert features.shape == (2, 16) and features.abs().max() <= 1.0
    assert (features[0] - features[1]).abs().max() > 1e-3


def test_image_encoder_choice_reaches_the_observation_encoder():
    spec = ObservationSpec(cameras={"front": (3, 32, 32)})
    small = ObservationEncoder(DiffusionConfig(obs=spec, action_dim=4, image_encoder="convnet"))
    assert isinstance(small.cameras["front"], ConvNetEncoder)
    with pytest.raises(ConfigError, match="image_encoder"):
        DiffusionConfig(obs=spec, action_dim=4, image_encoder="vit")


# -- crop_images -------------------------------------------------------------------------------


def _position_images(n: int, h: int, w: int) -> torch.Tensor:
    """Every pixel holds its own (row * w + col) index, in every channel."""
    grid = torch.arange(h * w, dtype=torch.float32).reshape(1, 1, h, w)
    return grid.expand(n, 3, h, w).clone()


def test_centre_crop_is_deterministic_and_centred():
    images = _position_images(4, 10, 20)
    crop = crop_images(images, 0.6, random=False)
    assert crop.shape == (4, 3, 6, 12)
    torch.testing.assert_close(crop, images[:, :, 2:8, 4:16], rtol=0, atol=0)
    torch.testing.assert_close(crop_images(images, 0.6, random=False), crop, rtol=0, atol=0)


def test_random_crop_shape_offsets_and_contiguity():
    torch.manual_seed(0)
    n, h, w = 32, 12, 16
    images = _position_images(n, h, w)
    crop = crop_images(images, 0.5, random=True)
    assert crop.shape == (n, 3, 6, 8)
    offsets = set()
    for i in range(n):
        top, left = divmod(int(crop[i, 0, 0, 0]), w)
        offsets.add((top, left))
        assert 0 <= top <= h - 6 and 0 <= left <= w - 8
        # Each crop is a contiguous window of its own image, the same in every channel.
        torch.testing.assert_close(crop[i], images[i, :, top : top + 6, left : left + 8], rtol=0, atol=0)
    assert len(offsets) > 1, "random crops of a batch should use different offsets"


def test_crop_fraction_one_returns_input():
    images = torch.rand(2, 3, 9, 9)
    assert crop_images(images, 1.0, random=True) is images


# -- ObservationEncoder ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "low_dim, cameras",
    [
        ({"state": 7}, {}),
        ({}, {"cam": (3, 32, 32)}),
        ({"pos": 4, "vel": 3}, {"cam": (3, 32, 32), "wrist": (3, 24, 24)}),
    ],
    ids=["state-only", "image-only", "both"],
)
def test_observation_encoder_output_dim_matches_width(low_dim, cameras):
    torch.manual_seed(0)
    config = DiffusionConfig(
        obs=ObservationSpec(low_dim=low_dim, cameras=cameras),
        n_obs_steps=3,
        n_action_steps=4,
        horizon=8,
        state_feature_dim=12,
        image_feature_dim=10,
    )
    encoder = ObservationEncoder(config)
    expected = 3 * ((12 if low_dim else 0) + 10 * len(cameras))
    assert encoder.output_dim == expected
    batch = 2
    obs = {key: torch.randn(batch, 3, d) for key, d in low_dim.items()}
    obs.update({name: torch.rand(batch, 3, *shape) for name, shape in cameras.items()})
    for training in (True, False):
        encoder.train(training)
        with torch.no_grad():
            out = encoder(obs)
        assert out.shape == (batch, expected)


# -- configuration errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"unet_preset": "huge"}, "unet_preset"),
        ({"prediction_type": "v_prediction"}, "prediction_type"),
        ({"horizon": 10, "n_action_steps": 4}, "multiple of 4"),
        ({"horizon": 8, "n_obs_steps": 2, "n_action_steps": 8}, "exceeds"),
        ({"action_dim": 0}, "action_dim"),
        ({"crop_fraction": 0.2}, "crop_fraction"),
    ],
)
def test_diffusion_config_rejects_bad_values(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        DiffusionConfig(**kwargs)


def test_diffusion_config_accepts_edge_of_horizon_and_round_trips():
    config = DiffusionConfig(horizon=8, n_obs_steps=2, n_action_steps=7, unet_preset="tiny")
    again = DiffusionConfig.from_dict(config.to_dict())
    assert again == config
    assert again.down_dims == UNET_PRESETS["tiny"]


def test_diffusion_config_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="unknown policy config keys"):
        DiffusionConfig.from_dict({"horizon": 16, "bogus": 1})


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({}, "empty"),
        ({"cameras": {"cam": (64, 64, 3)}}, "cam"),
        ({"cameras": {"cam": (3, 64)}}, "cam"),
        ({"low_dim": {"state": 0}}, "state"),
    ],
    ids=["empty", "hwc-camera", "2d-camera", "zero-dim"],
)
def test_observation_spec_rejects_bad_specs(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ObservationSpec(**kwargs)
