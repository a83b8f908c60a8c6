"""AVI-HT network, baselines, losses, checkpoints and the EKF baseline (avi_ht_ros.models)."""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest
import torch
import yaml
from scipy.spatial.transform import Rotation

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.common.glove_model import GloveModel
from avi_ht_ros.common.hand_model import (
    JOINT_NAMES,
    NUM_JOINTS,
    default_hand_model,
    forward_kinematics_numpy,
    forward_kinematics_torch,
)
from avi_ht_ros.models.attention import SequenceFirstAttention
from avi_ht_ros.models.bench import benchmark_models, synthetic_frame_inputs
from avi_ht_ros.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from avi_ht_ros.models.config import (
    FusionConfig,
    HeadConfig,
    ImuEncoderConfig,
    LossConfig,
    ModelConfig,
    SensorDropoutConfig,
    VisionEncoderConfig,
    load_experiment_config,
)
from avi_ht_ros.models.ekf import EkfConfig, gyro_from_imu_window, run_ekf_on_sequence, sensor_chains
from avi_ht_ros.models.factory import build_model, sensor_layout
from avi_ht_ros.models.fusion import HierarchicalCrossSensorFusion
from avi_ht_ros.models.interface import ModelInputs
from avi_ht_ros.models.losses import PoseTargets, compute_losses, landmark_nll, max_mse, temporal_velocity_loss

ROOT = pathlib.Path(__file__).resolve().parents[1]
MODEL_TYPES = ("avi_ht", "vision_only", "imu_only")


@pytest.fixture(scope="module")
def glove() -> GloveModel:
    return GloveModel.from_yaml(ROOT / "config" / "glove_12imu.yaml")


def tiny_config(model_type: str, num_views: int = 1, dropout: bool = False, ftl_reference: str = "view0") -> ModelConfig:
    """The full architecture at test widths (fast forward/backward)."""
    return ModelConfig(
        type=model_type,
        embed_dim=32,
        imu_encoder=ImuEncoderConfig(model_dim=24, num_heads=2, feedforward_dim=24, mlp_hidden_dim=32),
        vision_encoder=VisionEncoderConfig(num_views=num_views, stem_channels=8, stage_channels=(8, 16, 32),
                                           blocks_per_stage=(1, 1, 1), ftl_groups=8, recurrent_channels=16,
                                           ftl_reference=ftl_reference),
        fusion=FusionConfig(num_heads=2),
        head=HeadConfig(hidden_dim=64),
        sensor_dropout=SensorDropoutConfig(enabled=dropout),
    )


def make_inputs(model, batch: int, seed: int = 0) -> ModelInputs:
    inputs = synthetic_frame_inputs(model, batch_size=batch, seed=seed)
    if inputs.R_virtual_from_camera is not None:  # crops looking a little off-axis, like real ones
        rotations = Rotation.random(batch * inputs.R_virtual_from_camera.shape[1], random_state=seed)
        small = Rotation.from_rotvec(0.3 * rotations.as_rotvec() / np.linalg.norm(rotations.as_rotvec(), axis=-1)[:, None])
        inputs.R_virtual_from_camera = torch.tensor(small.as_matrix(), dtype=torch.float32).reshape(
            inputs.R_virtual_from_camera.shape)
    return inputs


# --------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_shipped_yaml_configs_load_and_build(model_type, glove):
    config = load_experiment_config(ROOT / "config" / f"model_{model_type}.yaml")
    assert config.model.type == model_type
    assert config.training.learning_rate == pytest.approx(7.89e-4)
    assert config.training.lr_decay_epochs == (30,) and config.training.epochs == 40
    assert config.training.batch_size == 48 and config.training.eps == pytest.approx(1e-8)
    assert config.model.imu_encoder.model_dim == 69 and config.model.imu_encoder.window_length == 14
    build_model(config.model, glove=glove)


@pytest.mark.parametrize(
    "text,key",
    [
        ("model: {type: avi_ht, fusion: {num_head: 4}}", "model.fusion.num_head"),
        ("model: {embed_dim: 64.5}", "model.embed_dim"),
        ("model: {type: transformer}", "model.type"),
        ("model: {embed_dim: 62}", "model.fusion.num_heads"),  # 4 heads do not divide 62
        ("loss: {landmark_nll_weight: -1}", "loss.landmark_nll_weight"),
        ("training: {lr_decay_epochs: [30], epochs: 20}", "training.lr_decay_epochs"),
        ("model: {imu_encoder: {samples_per_token: 3}}", "model.imu_encoder.samples_per_token"),
        ("model: [1, 2]", "model"),
    ],
)
def test_config_errors_name_the_file_and_key(tmp_path, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_experiment_config(path)
    assert str(error.value).startswith(f"{path}: {key}"), str(error.value)


# --------------------------------------------------------------------------------------
# shapes, geometry, attention, masks
# --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "model_type,num_views,ftl_reference",
    [("avi_ht", 1, "view0"), ("avi_ht", 2, "view0"), ("avi_ht", 2, "camera"), ("vision_only", 1, "view0"),
     ("imu_only", 1, "view0")],
)
def test_output_shapes_limits_and_fk_consistency(model_type, num_views, ftl_reference, glove):
    torch.manual_seed(0)
    model = build_model(tiny_config(model_type, num_views, ftl_reference=ftl_reference), glove=glove).eval()
    inputs = make_inputs(model, batch=3)
    with torch.no_grad():
        outputs, state = model(inputs)
    assert outputs.landmarks.shape == (3, 21, 3)
    assert outputs.joint_angles.shape == (3, NUM_JOINTS)
    assert outputs.wrist_rotation.shape == (3, 3, 3) and outputs.wrist_translation.shape == (3, 3)
    assert outputs.log_sigma.shape == (3, 21) and bool((outputs.sigma > 0).all())
    hand = default_hand_model()
    assert hand.within_limits(outputs.joint_angles.numpy()).all()
    rotation = outputs.wrist_rotation
    assert torch.allclose(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(3), atol=1e-5)
    expected = forward_kinematics_torch(outputs.joint_angles, rotation, outputs.wrist_translation,
                                        inputs.hand_scale, "right").landmarks
    assert torch.allclose(outputs.landmarks, expected, atol=1e-6)
    if model_type == "imu_only":
        assert outputs.root_relative and state is None
        assert torch.equal(outputs.wrist_translation, torch.zeros(3, 3))
    else:
        assert state.shape[0] == 3
        # At initialisation the wrist sits on the view-0 crop's centre ray, in front of the camera.
        ray = inputs.R_virtual_from_camera[:, 0, 2]  # crop z axis in the camera frame
        direction = outputs.wrist_translation / outputs.wrist_translation.norm(dim=1, keepdim=True)
        assert bool(((direction * ray).sum(dim=1) > 0.99).all())
    if model_type == "avi_ht":
        assert outputs.imu_attention.shape == (3, glove.num_sensors) and outputs.vision_weight.shape == (3,)


def test_attention_rows_are_distributions_and_first_row_sums_to_at_most_one(glove):
    torch.manual_seed(1)
    model = build_model(tiny_config("avi_ht"), glove=glove).eval()
    with torch.no_grad():
        outputs, _ = model(make_inputs(model, batch=4))
    assert torch.allclose(outputs.level1_attention.sum(dim=-1), torch.ones(4, 13), atol=1e-5)
    importance = outputs.imu_attention.sum(dim=1)
    assert bool((outputs.imu_attention >= 0).all()) and bool((importance <= 1 + 1e-6).all())
    assert torch.allclose(importance, 1 - outputs.level1_attention[:, 0, 0], atol=1e-5)
    assert bool(((outputs.vision_weight > 0) & (outputs.vision_weight < 1)).all())


def test_imu_encoders_first_layer_projection_from_the_raw_rows_equals_layernorm_then_projection(glove):
    """The inference shortcut computes W_qkv·LN(x) + b of the first layer from the 3p-dim rows
    (x = rows·W_inᵀ + token embedding): same values as the LayerNorm and the projection, with a
    non-trivial LayerNorm affine, zeroed (masked) rows and two batch elements; a weight change
    invalidates its cached factors."""
    torch.manual_seed(12)
    encoder = build_model(tiny_config("avi_ht"), glove=glove).imu_encoder
    layer = encoder.layers[0]
    with torch.no_grad():
        layer.attention_norm.weight.uniform_(0.5, 1.5)
        layer.attention_norm.bias.normal_(0.0, 0.3)
    batch = 2
    tokens = encoder.window_length // encoder.samples_per_token
    rows = torch.randn(tokens * batch * encoder.num_features, 3 * encoder.samples_per_token)
    rows[::7] = 0.0  # masked samples are zeroed before the projection

    def reference():
        x = torch.addmm(encoder._token_embedding(batch), rows, encoder.input_projection.weight.t())
        weight, bias = layer.attention._joint_projection()
        return torch.nn.functional.linear(layer.attention_norm(x), weight, bias)

    with torch.no_grad():
        for _ in range(2):
            torch.testing.assert_close(encoder._first_layer_joint_projection(rows, batch), reference(),
                                       atol=2e-5, rtol=1e-5)
            layer.attention.key_value.weight.mul_(1.3)  # the cached factors must follow
            encoder.row_embedding.add_(0.2)


def test_inference_fast_paths_match_the_autograd_path(glove):
    """Eval + no autograd uses folded batch norms, channels-last convolutions and cached joint
    projections; results must equal the plain module path (autograd on), also after the
    weights change."""
    torch.manual_seed(11)
    model = build_model(tiny_config("avi_ht"), glove=glove)
    inputs = make_inputs(model, batch=3)
    with torch.no_grad():
        for _ in range(3):  # non-trivial batch-norm running statistics
            model(inputs)
    model.eval()
    for step in range(2):
        with torch.no_grad():
            fast, fast_state = model(inputs)
        with torch.enable_grad():
            plain, plain_state = model(inputs)
        assert torch.allclose(fast.landmarks, plain.landmarks, atol=1e-5)
        assert torch.allclose(fast_state, plain_state, atol=1e-5)
        assert torch.allclose(fast.imu_attention, plain.imu_attention, atol=1e-6)
        with torch.no_grad():  # e.g. an optimiser step or load_state_dict: caches must follow
            model.vision_encoder.backbone.stem[1].running_var.mul_(1.5)
            model.imu_encoder.row_embedding.add_(0.1)
            model.fusion.prior.raw_alpha.add_(0.5)
            model.vision_encoder.recurrent.gates.weight.add_(0.01)  # a plain (channels-last cached) conv


def test_joint_qkv_projection_matches_separate_projections():
    torch.manual_seed(10)
    attention = SequenceFirstAttention(24, 3)
    x = torch.randn(5, 4, 24)
    bias = torch.randn(12, 5, 5)
    joint_train = attention(x, x, bias)  # autograd on: recomputed joint weights
    with torch.no_grad():
        joint_cached = attention(x, x, bias)  # inference: cached joint weights
        separate = attention(x, x.clone(), bias)  # different key source: separate projections
        attention.query.weight.add_(1.0)  # parameter change must invalidate the cache
        changed = attention(x, x, bias)
        changed_separate = attention(x, x.clone(), bias)
    for result in (joint_train, joint_cached):
        assert torch.allclose(result[0], separate[0], atol=1e-5) and torch.allclose(result[1], separate[1], atol=1e-6)
    assert torch.allclose(changed[0], changed_separate[0], atol=1e-5)
    assert torch.allclose(separate[1].sum(dim=-1), torch.ones(12, 5), atol=1e-5)


def mean_attended_hops(attention: torch.Tensor, hops: torch.Tensor) -> float:
    """Expected hop distance of the sensor→sensor attention (sensor query rows, renormalised)."""
    sensor_block = attention[:, 1:, 1:]
    sensor_block = sensor_block / sensor_block.sum(dim=-1, keepdim=True)
    return float((sensor_block * hops).sum(dim=-1).mean())


def test_large_alpha_shifts_attention_to_kinematically_near_sensors(glove):
    hops = torch.tensor(glove.hop_distance_matrix(), dtype=torch.float32)
    torch.manual_seed(2)
    tokens = torch.randn(4, 64), torch.randn(4, glove.num_sensors, 64)
    live = torch.ones(4, glove.num_sensors, dtype=torch.bool)
    spreads = {}
    for alpha in (0.0, 6.0):
        torch.manual_seed(3)  # same weights for both
        fusion = HierarchicalCrossSensorFusion(64, hops, FusionConfig(kinematic_alpha=alpha, learnable_alpha=False))
        with torch.no_grad():
            _, _, _, attention = fusion(*tokens, live)
        spreads[alpha] = mean_attended_hops(attention, hops)
        near_mass = (attention[:, 1:, 1:] * (hops <= 1)).sum(dim=-1) / attention[:, 1:, 1:].sum(dim=-1)
        if alpha > 0:
            assert float(near_mass.min()) > 0.95
    assert spreads[6.0] < 0.5 * spreads[0.0], spreads
    # With the prior alone (zero query/key weights) each sensor row decays as exp(-alpha*hop).
    fusion = HierarchicalCrossSensorFusion(64, hops, FusionConfig(kinematic_alpha=2.0, learnable_alpha=False))
    with torch.no_grad():
        fusion.level1.attention.query.weight.zero_()
        fusion.level1.attention.query.bias.zero_()
        _, _, _, attention = fusion(*tokens, live)
    row = attention[0, 1, 1:]
    expected = torch.softmax(-2.0 * hops[0], dim=0) * (1 - attention[0, 1, 0])
    assert torch.allclose(row, expected, atol=1e-5)


def test_dead_sensors_get_zero_attention_and_their_data_cannot_leak(glove):
    torch.manual_seed(4)
    model = build_model(tiny_config("avi_ht"), glove=glove).eval()
    layout = sensor_layout(glove, "gravity+finger_gyro")
    inputs = make_inputs(model, batch=2)
    dead = [0, 5]
    rows = np.isin(layout.token_of_feature, dead)
    inputs.imu_valid[:, :, torch.from_numpy(rows)] = False
    with torch.no_grad():
        outputs, _ = model(inputs)
        garbage = dataclasses.replace(inputs, imu_features=inputs.imu_features.clone())
        garbage.imu_features[:, :, torch.from_numpy(rows)] = float("nan")
        outputs_garbage, _ = model(garbage)
    assert torch.equal(outputs.imu_attention[:, dead], torch.zeros(2, len(dead)))
    assert bool(outputs.imu_attention[:, [1, 2, 3]].gt(0).all())
    assert not outputs.sensor_valid[:, dead].any()
    for name in ("landmarks", "joint_angles", "imu_attention", "vision_weight", "log_sigma"):
        assert torch.equal(getattr(outputs, name), getattr(outputs_garbage, name)), name
    # Every sensor dead (glove unplugged): vision alone, still finite.
    inputs.imu_valid[:] = False
    inputs.imu_features[:] = float("nan")
    with torch.no_grad():
        outputs, _ = model(inputs)
    assert torch.equal(outputs.imu_attention, torch.zeros(2, glove.num_sensors))
    assert torch.allclose(outputs.vision_weight, torch.ones(2))
    assert all(bool(torch.isfinite(getattr(outputs, n)).all()) for n in ("landmarks", "log_sigma", "wrist_translation"))
    with torch.no_grad():
        no_glove, _ = model(dataclasses.replace(inputs, imu_features=None, imu_valid=None))
    assert torch.equal(no_glove.landmarks, outputs.landmarks)  # no window at all == every sensor dead
    imu_only = build_model(tiny_config("imu_only"), glove=glove).eval()
    with torch.no_grad():
        outputs, _ = imu_only(inputs)
    assert bool(torch.isfinite(outputs.landmarks).all())


def test_sensor_dropout_masks_random_subsets_in_training_only(glove):
    config = tiny_config("avi_ht", dropout=True)
    config.sensor_dropout = SensorDropoutConfig(sample_probability=1.0, sensor_probability=0.5,
                                                all_dead_probability=0.2, seed=7)
    model = build_model(config, glove=glove)
    kept = model.sensor_dropout.sample_kept_sensors(2000)
    all_dead = (~kept).all(dim=1).float().mean()
    assert 0.15 < float(all_dead) < 0.3
    assert 0.3 < float((~kept).float().mean()) < 0.7
    valid = torch.ones(4, 14, 23, dtype=torch.bool)
    assert not torch.equal(model.sensor_dropout(valid), valid)
    again = build_model(config, glove=glove).sensor_dropout.sample_kept_sensors(2000)
    assert torch.equal(kept, again)  # deterministic per seed
    model.eval()
    assert torch.equal(model.sensor_dropout(valid), valid)


def test_mixed_sides_in_one_batch_match_single_side_calls(glove):
    torch.manual_seed(5)
    model = build_model(tiny_config("vision_only"), glove=glove).eval()
    inputs = make_inputs(model, batch=2)
    with torch.no_grad():
        mixed, _ = model(dataclasses.replace(inputs, side=torch.tensor([True, False])))
        left, _ = model(dataclasses.replace(inputs, side="left"))
        right, _ = model(dataclasses.replace(inputs, side="right"))
    assert torch.allclose(mixed.landmarks[0], left.landmarks[0]) and torch.allclose(mixed.landmarks[1], right.landmarks[1])
    assert not torch.allclose(left.landmarks, right.landmarks)


# --------------------------------------------------------------------------------------
# training signal
# --------------------------------------------------------------------------------------

def random_targets(batch: int, inputs: ModelInputs, seed: int) -> PoseTargets:
    generator = np.random.default_rng(seed)
    hand = default_hand_model()
    angles = generator.uniform(hand.joint_lower, hand.joint_upper, (batch, NUM_JOINTS)) * 0.7
    rotation = Rotation.random(batch, random_state=seed).as_matrix()
    ray = inputs.R_virtual_from_camera[:, 0, 2].numpy()
    translation = ray * generator.uniform(0.3, 0.5, (batch, 1))
    fk = forward_kinematics_numpy(angles, rotation, translation, 1.0, "right")
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return PoseTargets(as_tensor(fk.landmarks), as_tensor(angles), as_tensor(rotation), as_tensor(translation))


def test_gradients_reach_both_encoders_and_the_kinematic_prior(glove):
    torch.manual_seed(6)
    model = build_model(tiny_config("avi_ht"), glove=glove).train()
    inputs = make_inputs(model, batch=4)
    outputs, _ = model(inputs)
    compute_losses(outputs, random_targets(4, inputs, 0), LossConfig())["total"].backward()
    for name in ("vision_encoder.backbone.stem.0.weight", "vision_encoder.recurrent.gates.weight",
                 "imu_encoder.input_projection.weight", "imu_encoder.layers.0.attention.key_value.weight",
                 "fusion.prior.raw_alpha", "fusion.level2.attention.query.weight", "head.output.weight"):
        gradient = dict(model.named_parameters())[name].grad
        assert gradient is not None and float(gradient.abs().sum()) > 0, name


def test_tiny_model_overfits_eight_samples(glove):
    torch.manual_seed(7)
    model = build_model(tiny_config("avi_ht"), glove=glove).train()
    inputs = make_inputs(model, batch=8, seed=1)
    targets = random_targets(8, inputs, seed=1)
    loss_config = LossConfig()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster and immune to a busy second core
    try:
        for _ in range(200):
            optimizer.zero_grad()
            outputs, _ = model(inputs)
            loss = compute_losses(outputs, targets, loss_config)["total"]
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        torch.set_num_threads(threads)
    first, last = losses[0], float(np.mean(losses[-10:]))
    print(f"overfit loss {first:.2f} -> {last:.2f}")
    assert last < 0.5 * first, (first, last)
    error_mm = 1e3 * float((outputs.landmarks - targets.landmarks).detach().norm(dim=-1).mean())
    print(f"landmark error {error_mm:.1f} mm")
    assert error_mm < 30.0, error_mm


def test_recurrent_state_carries_information_and_clips_match_frame_loops(glove):
    torch.manual_seed(8)
    model = build_model(tiny_config("avi_ht"), glove=glove).eval()
    first, second = make_inputs(model, 2, seed=1), make_inputs(model, 2, seed=2)
    with torch.no_grad():
        _, state = model(first)
        with_history, _ = model(second, state)
        fresh, _ = model(second)
        other_state = model(make_inputs(model, 2, seed=3))[1]
        other_history, _ = model(second, other_state)
    assert state.abs().sum() > 0
    assert not torch.allclose(with_history.landmarks, fresh.landmarks, atol=1e-6)
    assert not torch.allclose(with_history.landmarks, other_history.landmarks, atol=1e-6)
    clip = ModelInputs(**{
        f.name: (torch.stack([getattr(first, f.name), getattr(second, f.name)], dim=1)
                 if isinstance(getattr(first, f.name), torch.Tensor) else getattr(first, f.name))
        for f in dataclasses.fields(ModelInputs)
    })
    with torch.no_grad():
        clip_outputs, clip_state = model.forward_clip(clip)
    assert clip_outputs.landmarks.shape == (2, 2, 21, 3)
    assert torch.allclose(clip_outputs.landmarks[:, 1], with_history.landmarks, atol=1e-6)
    assert torch.allclose(clip_state, model(second, state)[1], atol=1e-6)


# --------------------------------------------------------------------------------------
# losses
# --------------------------------------------------------------------------------------

def test_loss_terms_behave_as_documented():
    target = torch.zeros(1, 21, 3)
    predicted = target.clone()
    predicted[..., 0] = 0.006  # every landmark 6 mm off
    # Laplace NLL |d|/sigma + 3 log sigma is minimised at sigma = |d| / 3 = 2 mm.
    sigmas = torch.tensor([0.001, 0.002, 0.004])
    values = [float(landmark_nll(predicted, target, torch.full((1, 21), float(torch.log(s))))) for s in sigmas]
    assert values[1] < values[0] and values[1] < values[2]
    assert max_mse(predicted, target) == pytest.approx(36.0)  # equal errors: plain MSE in mm²
    predicted[:, 20] = 0.06  # one bad fingertip dominates maxMSE much more than the mean
    assert float(max_mse(predicted, target)) > 10 * float((((predicted - target) * 1e3) ** 2).sum(-1).mean())
    moving = torch.cumsum(torch.full((1, 5, 21, 3), 0.01), dim=1)
    assert float(temporal_velocity_loss(moving + 0.003, moving)) == pytest.approx(0.0, abs=1e-4)
    assert float(temporal_velocity_loss(moving * 2, moving)) > 1.0


def test_root_relative_outputs_are_compared_in_the_wrist_frame(glove):
    model = build_model(tiny_config("imu_only"), glove=glove).eval()
    inputs = make_inputs(model, batch=2)
    inputs.R_virtual_from_camera = torch.eye(3).expand(2, 1, 3, 3)
    targets = random_targets(2, inputs, seed=3)
    with torch.no_grad():
        outputs, _ = model(inputs)
    local = forward_kinematics_torch(targets.joint_angles, torch.eye(3), torch.zeros(3), 1.0, "right").landmarks
    outputs.landmarks, outputs.joint_angles = local, targets.joint_angles  # a perfect articulation
    terms = compute_losses(outputs, targets, LossConfig(landmark_nll_weight=0.0, max_mse_weight=1.0))
    assert float(terms["max_mse"]) < 1e-6 and float(terms["joint_angle"]) == 0.0


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------

def test_checkpoint_round_trip_is_weights_only(tmp_path, glove):
    torch.manual_seed(9)
    model = build_model(tiny_config("avi_ht", num_views=2), glove=glove).eval()
    path = save_checkpoint(tmp_path / "model.pt", model, metadata={"epoch": 3, "mkpe_mm": 10.4, "tags": ["a"]})
    raw = torch.load(path, weights_only=True)
    assert raw["model_config"]["vision_encoder"]["num_views"] == 2
    loaded = load_checkpoint(path, glove=glove)
    assert loaded.metadata == {"epoch": 3, "mkpe_mm": 10.4, "tags": ["a"]}
    assert loaded.config == model.config
    inputs = make_inputs(model, batch=2)
    with torch.no_grad():
        assert torch.equal(model(inputs)[0].landmarks, loaded.model(inputs)[0].landmarks)
    with pytest.raises(ValueError, match="metadata.when"):
        save_checkpoint(tmp_path / "bad.pt", model, metadata={"when": pathlib.Path("/")})


class _PicklePayload:
    """Unpickling this creates a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_checkpoint_with_a_pickle_payload_is_refused_unexecuted(tmp_path, glove):
    model = build_model(tiny_config("imu_only"), glove=glove)
    path = tmp_path / "evil.pt"
    marker = tmp_path / "payload_ran"
    payload = {"format": "avi_ht_ros.model_checkpoint", "version": 1, "model_config": {},
               "state_dict": model.state_dict(), "metadata": {"x": _PicklePayload(str(marker))}}
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(error.value).startswith(str(path)) and "weights-only" in str(error.value)
    assert not marker.exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(tmp_path / "junk.pt")


# --------------------------------------------------------------------------------------
# EKF baseline
# --------------------------------------------------------------------------------------

def test_sensor_chains_of_the_reference_glove(glove):
    chains = {(glove.sensor_names[c.parent_sensor], glove.sensor_names[c.child_sensor]):
              tuple(JOINT_NAMES[j] for j in c.joints) for c in sensor_chains(glove)}
    assert chains[("index_proximal", "index_distal")] == ("index_pip_flex", "index_dip_flex")
    assert chains[("hand_back", "index_proximal")] == ("index_mcp_flex", "index_mcp_abd")
    assert set(chains[("hand_back", "pinky_proximal")]) == {"pinky_cmc_flex", "pinky_mcp_flex", "pinky_mcp_abd"}
    covered = {j for joints in chains.values() for j in joints}
    assert covered == set(JOINT_NAMES)


def test_gyro_rows_of_an_imu_window_per_sensor(glove):
    layout = sensor_layout(glove, "gravity+finger_gyro")
    features = np.arange(14 * 23 * 3, dtype=float).reshape(14, 23, 3)
    valid = np.ones((14, 23), dtype=bool)
    gyro, gyro_valid = gyro_from_imu_window(features, valid, layout.row_signals, layout.token_of_feature, 12, 3)
    assert gyro.shape == (3, 12, 3)
    assert np.array_equal(gyro[:, 0], features[-3:, 12])  # index_proximal's gyro row
    assert not gyro_valid[:, layout.hand_back_index].any() and gyro_valid[:, :11].all()


def test_ekf_with_informative_gyros_beats_noisy_vision(glove):
    """Synthetic track: smooth joint motion under a rotating wrist, exact-kinematics gyros
    (+ noise) at 240 Hz, vision = truth + 0.12 rad noise at 60 Hz."""
    rng = np.random.default_rng(0)
    hand = default_hand_model()
    middle, amplitude = 0.5 * (hand.joint_lower + hand.joint_upper), 0.35 * (hand.joint_upper - hand.joint_lower)
    frequency, phase = rng.uniform(0.3, 1.2, NUM_JOINTS), rng.uniform(0, 2 * np.pi, NUM_JOINTS)

    def angles(t):
        return middle + amplitude * np.sin(2 * np.pi * frequency * np.asarray(t)[..., None] + phase)

    def sensor_orientations(t):
        t = np.asarray(t)
        wrist = Rotation.from_rotvec(np.stack([0.6 * np.sin(1.3 * t), 0.4 * np.sin(0.7 * t + 1), 0.5 * t], -1))
        fk = forward_kinematics_numpy(angles(t), wrist.as_matrix(), np.zeros(3), 1.0, "right")
        return fk.bone_rotations[..., glove.sensor_bone_indices, :, :] @ glove.mount_rotations("right")

    def gyro(t, h=1e-4):  # body rate of every IMU frame
        relative = np.swapaxes(sensor_orientations(t - h / 2), -1, -2) @ sensor_orientations(t + h / 2)
        return Rotation.from_matrix(relative.reshape(-1, 3, 3)).as_rotvec().reshape(relative.shape[:-1]) / h

    frames, per_frame, fps = 150, 4, 60.0
    sample_dt = 1.0 / (fps * per_frame)
    times = np.arange(frames) / fps
    gyros = [gyro(t - sample_dt * (np.arange(per_frame)[::-1] + 0.5)) + rng.normal(0, 0.02, (per_frame, 12, 3))
             for t in times]
    truth = angles(times)
    vision = truth + rng.normal(0, 0.12, truth.shape)
    sigma = np.full((frames, 21), 0.01)
    filtered = run_ekf_on_sequence(glove, vision, sigma, gyros, sample_dt)
    vision_rms = np.sqrt(np.mean((vision - truth) ** 2))
    filtered_rms = np.sqrt(np.mean((filtered - truth) ** 2))
    print(f"ekf {filtered_rms:.3f} vision {vision_rms:.3f}")
    assert filtered_rms < 0.6 * vision_rms, (filtered_rms, vision_rms)
    # Without gyro information (all sensors dead) the filter can only smooth vision; it must
    # not do worse than vision, and be clearly worse than with gyros.
    dead = [np.zeros((per_frame, 12), dtype=bool)] * frames
    blind = run_ekf_on_sequence(glove, vision, sigma, gyros, sample_dt, gyro_valid=dead, config=EkfConfig())
    blind_rms = np.sqrt(np.mean((blind - truth) ** 2))
    print(f"blind {blind_rms:.3f}")
    assert filtered_rms < 0.7 * blind_rms and blind_rms < 1.1 * vision_rms


# --------------------------------------------------------------------------------------
# bench
# --------------------------------------------------------------------------------------

def test_benchmark_returns_latency_numbers(capsys):
    configs = {name: tiny_config(name) for name in ("avi_ht", "vision_only")}
    results = benchmark_models(configs, iterations=5, warmup=1)
    assert set(results) == {"avi_ht", "vision_only"}
    assert all(r.p50_ms > 0 and r.p99_ms >= r.p50_ms and r.iterations == 5 for r in results.values())
    assert "p50 ratio" in capsys.readouterr().out


def test_wrist_aligned_landmark_loss_ignores_the_global_pose_and_sees_articulation():
    from scipy.spatial.transform import Rotation

    from avi_ht_ros.models.config import LossConfig
    from avi_ht_ros.models.interface import ModelOutputs
    from avi_ht_ros.models.losses import PoseTargets, compute_losses

    torch.manual_seed(0)
    b = 4
    true_r = torch.as_tensor(Rotation.random(b, random_state=1).as_matrix(), dtype=torch.float32)
    true_t = torch.randn(b, 3) * 0.1 + torch.tensor([0.0, 0.0, 0.4])
    local = torch.randn(b, 21, 3) * 0.05
    truth = local @ true_r.transpose(-1, -2) + true_t[:, None]
    pred_r = torch.as_tensor(Rotation.random(b, random_state=2).as_matrix(), dtype=torch.float32)
    pred_t = true_t + 0.05
    config = LossConfig(landmark_nll_weight=0.0, joint_angle_weight=1.0, wrist_aligned_landmark_weight=1.0)
    targets = PoseTargets(landmarks=truth, joint_angles=torch.zeros(b, 22), wrist_rotation=true_r,
                          wrist_translation=true_t)

    def loss_for(pred_local):
        outputs = ModelOutputs(landmarks=pred_local @ pred_r.transpose(-1, -2) + pred_t[:, None],
                               joint_angles=torch.zeros(b, 22), wrist_rotation=pred_r, wrist_translation=pred_t,
                               log_sigma=torch.zeros(b, 21))
        return compute_losses(outputs, targets, config)["wrist_aligned_landmark"].item()

    assert loss_for(local) == pytest.approx(0.0, abs=1e-3)  # any global pose error: no loss
    moved = local.clone()
    moved[:, 8] += torch.tensor([0.01, 0.0, 0.0])  # index tip 10 mm off in the hand frame
    assert loss_for(moved) == pytest.approx(10.0 / 21, rel=1e-3)


def test_wrist_aligned_nll_uses_its_own_sigma_and_needs_the_aligned_head():
    from avi_ht_ros.models.interface import ModelOutputs

    torch.manual_seed(0)
    b = 3
    true_r = torch.as_tensor(Rotation.random(b, random_state=3).as_matrix(), dtype=torch.float32)
    true_t = torch.tensor([0.0, 0.0, 0.4]).expand(b, 3)
    local = torch.randn(b, 21, 3) * 0.05
    targets = PoseTargets(landmarks=local @ true_r.transpose(-1, -2) + true_t[:, None],
                          joint_angles=torch.zeros(b, 22), wrist_rotation=true_r, wrist_translation=true_t)
    moved = local.clone()
    moved[:, 8] += torch.tensor([0.0, 0.006, 0.0])  # index tip 6 mm off in the hand frame
    aligned_log_sigma = torch.full((b, 21), float(np.log(2e-3)), requires_grad=True)  # σ = 2 mm
    outputs = ModelOutputs(landmarks=moved @ true_r.transpose(-1, -2) + true_t[:, None] + 0.03,  # + 3 cm global
                           joint_angles=torch.zeros(b, 22), wrist_rotation=true_r, wrist_translation=true_t + 0.03,
                           log_sigma=torch.zeros(b, 21), log_sigma_aligned=aligned_log_sigma)
    config = LossConfig(landmark_nll_weight=0.0, joint_angle_weight=0.0, wrist_aligned_landmark_nll_weight=2.0)
    terms = compute_losses(outputs, targets, config)
    # only the 6 mm articulation error counts, under σ = 2 mm: (6/2)/21 + 3·log 2
    assert terms["wrist_aligned_landmark_nll"].item() == pytest.approx(2.0 * (3.0 / 21 + 3 * np.log(2.0)), rel=1e-4)
    terms["total"].backward()
    assert aligned_log_sigma.grad[:, 8].abs().min() > 0  # the σ of the wrong landmark is trained
    with pytest.raises(ValueError, match="head.aligned_sigma"):
        compute_losses(dataclasses.replace(outputs, log_sigma_aligned=None), targets, config)
    # root-relative models already have a wrist-aligned NLL: no second one
    assert "wrist_aligned_landmark_nll" not in compute_losses(
        dataclasses.replace(outputs, root_relative=True), targets, dataclasses.replace(config, joint_angle_weight=1.0))


def test_aligned_sigma_head_is_a_separate_output_and_configs_check_it(tmp_path):
    config = load_experiment_config("model_avi_ht.yaml")
    with_aligned = dataclasses.replace(config.model, head=dataclasses.replace(config.model.head, aligned_sigma=True))
    torch.manual_seed(0)
    plain, aligned = build_model(config.model).eval(), build_model(with_aligned).eval()
    missing = set(aligned.state_dict()) - set(plain.state_dict())
    assert missing == {"head.aligned_log_sigma.weight", "head.aligned_log_sigma.bias"}  # the rest warm-starts
    aligned.load_state_dict(plain.state_dict(), strict=False)
    inputs = synthetic_frame_inputs(plain)
    with torch.no_grad():
        a, _ = plain(inputs)
        b, _ = aligned(inputs)
    assert torch.equal(a.landmarks, b.landmarks) and a.log_sigma_aligned is None
    assert b.log_sigma_aligned.shape == (1, 21)
    assert torch.allclose(b.log_sigma_aligned, torch.tensor(config.model.head.log_sigma_init_m), atol=0.3)

    def experiment(raw):  # through the real loader
        path = tmp_path / "experiment.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load_experiment_config(path)

    raw = {"model": {"type": "vision_only"}, "loss": {"wrist_aligned_landmark_nll_weight": 1.0}}
    with pytest.raises(ConfigError, match="aligned_sigma"):
        experiment(raw)
    raw["model"]["head"] = {"aligned_sigma": True}
    assert experiment(raw).model.head.aligned_sigma
    imu_only = load_experiment_config("model_imu_only.yaml").model
    with pytest.raises(ValueError, match="wrist pose"):
        build_model(dataclasses.replace(imu_only, head=dataclasses.replace(imu_only.head, aligned_sigma=True)))


@pytest.mark.parametrize("with_bias", [False, True])
def test_single_query_attention_equals_the_full_attention_row(with_bias):
    """The key-space path (one query, no key/value projection) is the last row of full attention."""
    torch.manual_seed(11)
    attention = SequenceFirstAttention(24, 3)
    x = torch.randn(6, 5, 24)  # [S, N, D]
    bias = None
    if with_bias:
        bias = torch.randn(15, 6, 6)
        bias[4, 2] = float("-inf")  # a masked key
    full_output, full_attention = attention(x, x, bias)  # joint-projection path, every query
    last_bias = None if bias is None else bias[..., -1:]
    for grad in (True, False):  # training (recomputed folds) and inference (cached folds)
        with torch.set_grad_enabled(grad):
            output, probabilities = attention(x[-1:].clone(), x, last_bias)
        assert output.shape == (1, 5, 24) and probabilities.shape == (15, 1, 6)
        assert torch.allclose(output, full_output[-1:], atol=1e-5)
        assert torch.allclose(probabilities, full_attention[:, -1:], atol=1e-6)
        if grad:
            trained_output = output
    trained_output.sum().backward()  # gradients reach every projection through the folded path
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in
               (attention.query.weight, attention.key_value.weight, attention.out.weight))
    with torch.no_grad():
        attention.out.weight.add_(0.5)  # a parameter change invalidates the cached folds
        changed, _ = attention(x[-1:].clone(), x, last_bias)
        assert torch.allclose(changed, attention(x, x, bias)[0][-1:], atol=1e-5)


def test_wrist_aligned_temporal_velocity_sees_articulation_jitter_not_the_moving_wrist():
    from avi_ht_ros.models.interface import ModelOutputs

    torch.manual_seed(0)
    b, s = 2, 4
    true_r = torch.as_tensor(Rotation.random(b * s, random_state=5).as_matrix(), dtype=torch.float32).view(b, s, 3, 3)
    true_t = torch.cumsum(torch.randn(b, s, 3) * 0.02, dim=1) + torch.tensor([0.0, 0.0, 0.4])   # the wrist moves
    local = (torch.randn(b, 1, 21, 3) * 0.05).expand(b, s, 21, 3)                                # a still hand shape
    to_camera = lambda shape, r, t: shape @ r.transpose(-1, -2) + t[..., None, :]               # noqa: E731
    targets = PoseTargets(landmarks=to_camera(local, true_r, true_t), joint_angles=torch.zeros(b, s, 22),
                          wrist_rotation=true_r, wrist_translation=true_t)
    config = LossConfig(landmark_nll_weight=0.0, joint_angle_weight=0.0, wrist_aligned_temporal_velocity_weight=1.0)

    def term(pred_local, pred_t):
        outputs = ModelOutputs(landmarks=to_camera(pred_local, true_r, pred_t), joint_angles=torch.zeros(b, s, 22),
                               wrist_rotation=true_r, wrist_translation=pred_t, log_sigma=torch.zeros(b, s, 21))
        return compute_losses(outputs, targets, config)["wrist_aligned_temporal_velocity"].item()

    # a wrong, jittering wrist position with the right hand shape: no articulation jitter
    assert term(local, true_t + torch.randn(b, s, 3) * 0.01) == pytest.approx(0.0, abs=1e-3)
    jitter = local.clone()
    jitter[:, 1::2, 8] += torch.tensor([0.004, 0.0, 0.0])   # index tip alternates 4 mm in the hand frame
    assert term(jitter, true_t) == pytest.approx(4.0 / 21, rel=1e-3)
    # a root-relative model's landmarks are wrist-aligned already: the same as temporal_velocity
    outputs = ModelOutputs(landmarks=jitter, joint_angles=torch.zeros(b, s, 22), wrist_rotation=true_r,
                           wrist_translation=torch.zeros(b, s, 3), log_sigma=torch.zeros(b, s, 21), root_relative=True)
    both = compute_losses(outputs, targets, dataclasses.replace(config, temporal_velocity_weight=1.0))
    assert both["wrist_aligned_temporal_velocity"].item() == pytest.approx(both["temporal_velocity"].item())
