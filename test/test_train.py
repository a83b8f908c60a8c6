"""Training: config loading, a tiny run that learns and checkpoints weights-only, exact resume,
seeds, baselines with the same command, and DDP over two CPU processes (torchrun, gloo)."""
from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from avi_ht_ros.common.errors import ConfigError
from avi_ht_ros.models.checkpoint import load_checkpoint
from avi_ht_ros.models.config import load_experiment_config
from avi_ht_ros.models.interface import ModelOutputs
from avi_ht_ros.models.losses import compute_losses
from avi_ht_ros.tracker import dataset as D
from avi_ht_ros.tracker import train as T

from test_dataset import build_config, write_bag_set

REPO = pathlib.Path(__file__).resolve().parents[1]

# A model small enough for seconds-long CPU runs (same architecture, tiny widths, 32 px crops).
TINY_MODEL = {
    "embed_dim": 16,
    "imu_encoder": {"model_dim": 12, "num_heads": 3, "feedforward_dim": 12, "mlp_hidden_dim": 16},
    "vision_encoder": {"crop_size": 32, "stem_channels": 8, "stage_channels": [8, 16, 16], "ftl_groups": 4,
                       "recurrent_channels": 8},
    "fusion": {"num_heads": 2, "feedforward_dim": 16},
    "head": {"hidden_dim": 32},
}


def tiny_config(dataset: pathlib.Path, model_type: str = "avi_ht", **run) -> dict:
    return {
        "base": f"model_{model_type}.yaml",
        "model": copy.deepcopy(TINY_MODEL),
        "training": {"batch_size": 4, "clip_length": 3 if model_type != "imu_only" else 1, "epochs": 3,
                     "lr_decay_epochs": [1], "learning_rate": 3.0e-3},
        "data": {"dataset": str(dataset), "validation_bags": ["bag_a"], "validation_clip_length": 4},
        "run": {"seed": 0, "log_every_steps": 1, "torch_threads": 1, **run},
    }


def write_yaml(path: pathlib.Path, data: dict) -> pathlib.Path:
    path.write_text(yaml.safe_dump(data))
    return path


def step_losses(run_dir: pathlib.Path) -> dict[int, float]:
    with (run_dir / "steps.csv").open() as handle:
        return {int(row["global_step"]): float(row["loss"]) for row in csv.DictReader(handle)}


def state_dict(path: pathlib.Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_data")
    bags = write_bag_set(root / "bags")
    D.build_dataset(list(bags.values()), root / "ds", build_config(seed=0), show_progress=False, log=None)
    return root / "ds"


@pytest.fixture(scope="module")
def reference_run(dataset, tmp_path_factory):
    """12 uninterrupted steps (train split: bag_b, 2 x 20 clips of 3 -> 10 steps per epoch)."""
    run_dir = tmp_path_factory.mktemp("runs") / "reference"
    config = T.train_config_from_dict(tiny_config(dataset, max_steps=12))
    trainer = T.Trainer(config, run_dir, show_progress=False, log=None)
    val = D.HandClipDataset(dataset, trainer.val_ids, clip_length=4, training=False, load_vision=True)
    fixed = D.collate_clips([val[i] for i in range(8)])

    def fixed_loss():
        trainer.model.eval()
        with torch.no_grad():
            outputs, _ = trainer.model.forward_clip(fixed.inputs)
            return float(compute_losses(outputs, fixed.targets, config.experiment.loss)["total"])

    before = fixed_loss()
    result = trainer.run()
    after = fixed_loss()
    return run_dir, result, before, after


# --------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------
def test_shipped_configs_have_the_paper_defaults_and_one_budget():
    configs = {t: T.load_train_config(f"train_{t}.yaml") for t in ("avi_ht", "vision_only", "imu_only")}
    training = configs["avi_ht"].experiment.training
    assert (training.learning_rate, training.weight_decay, training.beta1, training.eps) == (7.89e-4, 1e-6, 0.9, 1e-8)
    assert (training.epochs, training.lr_decay_epochs, training.lr_decay_factor, training.batch_size) == (
        40, (30,), 0.1, 48)
    for model_type, config in configs.items():
        assert config.experiment.model.type == model_type
        assert config.data == configs["avi_ht"].data and config.run == configs["avi_ht"].run
        budget = T.config_to_dict(config.experiment.training)
        budget.pop("clip_length")
        reference = T.config_to_dict(training)
        reference.pop("clip_length")
        assert budget == reference
    assert configs["avi_ht"].data.augmentation.gamma_range == (0.5, 1.7)
    assert configs["avi_ht"].data.augmentation.image_noise_sigma_dn == 10.0


def test_online_validation_tracks_the_validation_recordings_and_selects_by_them(dataset, tmp_path):
    """run.online_validation: after each epoch the validation bags run through the online tracker
    (as `avi-ht eval` does); the logged figures equal an independent evaluation of the saved
    checkpoint, best.pt is selected by them, and a missing source bag is a clear error."""
    from avi_ht_ros.cli import main
    from avi_ht_ros.tracker.evaluate import EvalModel, EvalOptions, evaluate

    config = T.train_config_from_dict(tiny_config(dataset, online_validation=True) | {
        "training": {**tiny_config(dataset)["training"], "epochs": 1, "lr_decay_epochs": []}})
    trainer = T.Trainer(config, tmp_path / "run", show_progress=False, log=None)
    assert [sorted(s.hands) for s in trainer.online_sequences] == [["right"]]  # bag_a, the validation bag
    result = trainer.run()
    (row,) = result.history
    assert row["val_online_frames"] > 0 and 0 < row["val_online_mkpe_mm"] < 1000
    assert row["val_online_mkpe_t_mm"] < row["val_online_mkpe_mm"]
    best = load_checkpoint(tmp_path / "run" / "checkpoints" / "best.pt")
    assert best.metadata["selection_metric"] == "online_mkpe_mm"
    independent = evaluate([EvalModel("check", best.model)], trainer.online_sequences,
                           EvalOptions(ekf=False, progress=False, threads=1)).metrics()["overall"]["check"]
    assert independent["mkpe_mm"] == pytest.approx(row["val_online_mkpe_mm"], rel=1e-6)
    assert independent["frames"] == row["val_online_frames"]
    # the same measurement from the command line (--validation-of: the dataset's validation split)
    assert main(["eval", f"best={tmp_path / 'run' / 'checkpoints' / 'best.pt'}", "--validation-of", str(dataset),
                 "--validation-bags", "bag_a", "--no-ekf", "--no-progress", "--out", str(tmp_path / "eval")]) == 0
    from_cli = json.loads((tmp_path / "eval" / "metrics.json").read_text())["overall"]["best"]
    assert from_cli["mkpe_mm"] == pytest.approx(row["val_online_mkpe_mm"], rel=1e-6)

    manifest = D.load_manifest(dataset)
    bag_a = next(s["path"] for s in manifest["sources"] if s["name"] == "bag_a")
    moved = pathlib.Path(str(bag_a) + "_moved")
    os.rename(bag_a, moved)
    try:
        with pytest.raises(ConfigError, match="run.online_validation"):
            T.Trainer(config, tmp_path / "run2", show_progress=False, log=None)
    finally:
        os.rename(moved, bag_a)


@pytest.mark.parametrize("stage", ["finetune", "articulation", "worn_glove"])
def test_later_stage_configs_load_and_give_fusion_and_vision_only_one_budget(stage):
    """Every later-stage config in config/ loads, and AVI-HT and vision-only get the same data,
    schedule and loss weights in it (the same budget). The worn-glove stage freezes AVI-HT's vision
    encoder (the images do not change with the glove); the baseline trains all of itself."""
    configs = {t: T.load_train_config(f"train_{t}_{stage}.yaml") for t in ("avi_ht", "vision_only")}
    assert {t: c.experiment.model.type for t, c in configs.items()} == {"avi_ht": "avi_ht", "vision_only": "vision_only"}
    fusion, vision = configs["avi_ht"], configs["vision_only"]
    assert fusion.data == vision.data and fusion.run == vision.run
    frozen = {t: c.experiment.training.frozen_modules for t, c in configs.items()}
    assert frozen == {"avi_ht": (("vision_encoder",) if stage == "worn_glove" else ()), "vision_only": ()}
    assert T.config_to_dict(dataclasses.replace(fusion.experiment.training, frozen_modules=())) == \
        T.config_to_dict(vision.experiment.training)
    assert T.config_to_dict(fusion.experiment.loss) == T.config_to_dict(vision.experiment.loss)
    assert sorted(p.name for p in (REPO / "config").glob(f"train_*_{stage}.yaml")) == [
        f"train_avi_ht_{stage}.yaml", f"train_vision_only_{stage}.yaml"]


def test_config_errors_and_overrides(tmp_path):
    bad = write_yaml(tmp_path / "bad.yaml", {"base": "model_avi_ht.yaml", "run": {"sead": 1}})
    with pytest.raises(ConfigError, match=r"bad.yaml: run.sead: unknown key"):
        T.load_train_config(bad)
    bad = write_yaml(tmp_path / "bad2.yaml", {"base": "model_avi_ht.yaml", "model": {"fusion": {"num_heads": 3}}})
    with pytest.raises(ConfigError, match=r"bad2.yaml: model.fusion.num_heads"):
        T.load_train_config(bad)
    config = T.load_train_config("train_avi_ht.yaml")
    short = T.with_overrides(config, epochs=8, seed=3, max_steps=5, batch_size=16, data="somewhere")
    assert short.experiment.training.epochs == 8 and short.experiment.training.lr_decay_epochs == (6,)
    assert (short.run.seed, short.run.max_steps, short.experiment.training.batch_size) == (3, 5, 16)
    assert short.data.dataset == "somewhere" and config.experiment.training.epochs == 40  # a copy
    merged = T.train_config_from_dict({"base": "model_avi_ht.yaml", "model": {"embed_dim": 32}})
    base = load_experiment_config("model_avi_ht.yaml")  # every other key comes from the base file
    assert merged.experiment.model.embed_dim == 32 and base.model.embed_dim != 32
    assert merged.experiment.model.vision_encoder == base.model.vision_encoder
    assert merged.experiment.training == base.training and merged.experiment.loss == base.loss



def test_base_beside_the_training_file_wins_over_the_shipped_one(tmp_path):
    """A copied config set (training YAML + its experiment file) uses the copy, not config/'s file
    of the same name; without a sibling the shipped file is used."""
    shipped = load_experiment_config("model_avi_ht.yaml").model.imu_encoder
    edited = shipped.model_dim + shipped.num_heads
    experiment = yaml.safe_load((REPO / "config" / "model_avi_ht.yaml").read_text())
    experiment["model"]["imu_encoder"]["model_dim"] = edited
    write_yaml(tmp_path / "model_avi_ht.yaml", experiment)
    shutil.copy(REPO / "config" / "train_avi_ht.yaml", tmp_path / "train_avi_ht.yaml")
    assert T.load_train_config(tmp_path / "train_avi_ht.yaml").experiment.model.imu_encoder.model_dim == edited
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(REPO / "config" / "train_avi_ht.yaml", alone / "train_avi_ht.yaml")
    assert T.load_train_config(alone / "train_avi_ht.yaml").experiment.model.imu_encoder.model_dim == shipped.model_dim

def test_dataset_must_fit_the_model(dataset, tmp_path):
    data = tiny_config(dataset)
    data["model"]["vision_encoder"]["crop_size"] = 48
    with pytest.raises(ConfigError, match="crop size 32 != model.vision_encoder.crop_size 48"):
        T.Trainer(T.train_config_from_dict(data), tmp_path / "run", show_progress=False, log=None)
    data = tiny_config(dataset)
    data["training"]["batch_size"] = 64
    with pytest.raises(ConfigError, match="fewer than one batch"):
        T.Trainer(T.train_config_from_dict(data), tmp_path / "run", show_progress=False, log=None)


def test_validation_metrics_on_known_errors(dataset):
    clips = D.HandClipDataset(dataset, ["bag_b/right"], clip_length=2, training=False)
    targets = D.collate_clips([clips[0], clips[1]]).targets
    shifted = ModelOutputs(landmarks=targets.landmarks + torch.tensor([0.0, 0.0, 0.01]),
                             joint_angles=targets.joint_angles + 0.1, wrist_rotation=targets.wrist_rotation,
                             wrist_translation=targets.wrist_translation + torch.tensor([0.0, 0.0, 0.01]),
                             log_sigma=torch.zeros(2, 2, 21))
    sums = T.metric_sums(shifted, targets)
    assert sums["mkpe_mm"] / sums["landmark_count"] == pytest.approx(10.0, abs=1e-3)  # a 1 cm offset
    assert sums["f_mkpe_mm"] / sums["fingertip_count"] == pytest.approx(10.0, abs=1e-3)
    assert sums["mkpe_t_mm"] / sums["landmark_count"] == pytest.approx(0.0, abs=1e-3)  # rigid: gone when aligned
    assert sums["joint_angle_mae_deg"] / sums["joint_count"] == pytest.approx(5.7296, abs=1e-3)
    root_relative = dataclasses.replace(shifted, root_relative=True)
    assert "mkpe_mm" not in T.metric_sums(root_relative, targets)


# --------------------------------------------------------------------------------------
# single-process training
# --------------------------------------------------------------------------------------
def test_tiny_run_learns_and_writes_weights_only_checkpoints(reference_run):
    run_dir, result, before, after = reference_run
    assert after < before - 0.5, (before, after)
    assert result.progress.global_step == 12 and result.stopped_by_max_steps
    assert (result.progress.epoch, result.progress.batch_in_epoch) == (1, 2)
    checkpoints = run_dir / "checkpoints"
    assert {p.name for p in checkpoints.iterdir()} == {"last.pt", "last_state.pt", "best.pt", "epoch_0001.pt"}
    payload = torch.load(checkpoints / "last.pt", weights_only=True)
    assert payload["metadata"]["global_step"] == 12 and payload["metadata"]["selection_metric"] == "mkpe_mm"
    assert payload["metadata"]["dataset"]["validation_sequences"] == ["bag_a/right"]
    state = torch.load(checkpoints / "last_state.pt", weights_only=True)
    assert state["progress"]["global_step"] == 12 and len(state["rng"]) == 1
    assert state["scheduler"]["last_epoch"] == 1 and state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(3e-4)
    loaded = load_checkpoint(checkpoints / "best.pt")
    assert loaded.config.type == "avi_ht" and loaded.metadata["metrics"]["val_mkpe_mm"] > 0
    # logs: one row per step, one per epoch (+ the max-steps stop), a plot
    assert sorted(step_losses(run_dir)) == list(range(1, 13))
    history = json.loads((run_dir / "metrics.json").read_text())
    assert [row["global_step"] for row in history] == [10, 12]
    assert [row["epoch_complete"] for row in history] == [True, False]
    assert history[0]["learning_rate"] == pytest.approx(3e-3) and history[1]["learning_rate"] == pytest.approx(3e-4)
    for key in ("train_loss", "val_loss", "val_mkpe_mm", "val_mkpe_t_mm", "val_f_mkpe_mm", "val_joint_angle_mae_deg"):
        assert history[0][key] is not None and history[0][key] > 0, key
    assert (run_dir / "metrics.csv").read_text().startswith("epoch,global_step")
    assert (run_dir / "loss_curve.png").stat().st_size > 10_000
    stored = T.load_train_config(run_dir / "config.yaml")
    assert stored.experiment.model.embed_dim == 16 and stored.run.max_steps == 12


def test_resume_continues_with_identical_batches(dataset, reference_run, tmp_path):
    reference_dir = reference_run[0]
    run_dir = tmp_path / "interrupted"
    T.Trainer(T.train_config_from_dict(tiny_config(dataset, max_steps=5)), run_dir, show_progress=False,
              log=None).run()
    shutil.copy(run_dir / "checkpoints" / "last.pt", tmp_path / "step5.pt")
    with pytest.raises(T.TrainingError, match="--resume"):
        T.Trainer(T.train_config_from_dict(tiny_config(dataset)), run_dir, show_progress=False, log=None)
    resumed = T.Trainer(T.train_config_from_dict(tiny_config(dataset, max_steps=12)), run_dir, resume=True,
                        show_progress=False, log=None)
    assert (resumed.progress.global_step, resumed.progress.batch_in_epoch) == (5, 5)
    result = resumed.run()
    assert result.progress.global_step == 12
    reference_losses, losses = step_losses(reference_dir), step_losses(run_dir)
    assert sorted(losses) == list(range(1, 13))
    for step in range(1, 13):
        assert losses[step] == reference_losses[step], step  # bit-identical, steps 6-12 after the resume
    assert_same_weights(state_dict(run_dir / "checkpoints" / "last.pt"),
                        state_dict(reference_dir / "checkpoints" / "last.pt"))
    assert [r["global_step"] for r in json.loads((run_dir / "metrics.json").read_text())] == [5, 10, 12]

    # the same seed reproduces the run, another seed does not
    again = tmp_path / "again"
    T.Trainer(T.train_config_from_dict(tiny_config(dataset, max_steps=5)), again, show_progress=False, log=None).run()
    assert_same_weights(state_dict(again / "checkpoints" / "last.pt"), state_dict(tmp_path / "step5.pt"))
    other = tmp_path / "other_seed"
    T.Trainer(T.train_config_from_dict(tiny_config(dataset, max_steps=5, seed=1)), other, show_progress=False,
              log=None).run()
    seed1, seed0 = state_dict(other / "checkpoints" / "last.pt"), state_dict(tmp_path / "step5.pt")
    differing = [name for name in seed0 if not torch.equal(seed0[name], seed1[name])]
    assert "head.output.weight" in differing and len(differing) > len(seed0) // 2


@pytest.mark.parametrize("model_type", ["vision_only", "imu_only"])
def test_baselines_train_with_the_same_command(dataset, tmp_path, model_type):
    """Both baselines train with `avi-ht train` (here with --online-validation: IMU-only is then
    selected by the online MKPE.T)."""
    from avi_ht_ros.cli import main

    config = write_yaml(tmp_path / f"{model_type}.yaml", tiny_config(dataset, model_type))
    out = tmp_path / model_type
    assert main(["train", "--config", str(config), "--out", str(out), "--max-steps", "2", "--no-progress",
                 "--online-validation"]) == 0
    payload = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert payload["model_config"]["type"] == model_type
    history = json.loads((out / "metrics.json").read_text())
    assert history[-1]["val_online_frames"] > 0 and history[-1]["val_online_mkpe_t_mm"] > 0
    if model_type == "imu_only":  # root-relative: no absolute MKPE, selected by MKPE.T
        assert payload["metadata"]["selection_metric"] == "online_mkpe_t_mm"
        assert history[-1]["val_mkpe_mm"] is None and history[-1]["val_mkpe_t_mm"] > 0
        assert history[-1]["val_online_mkpe_mm"] is None
    else:
        assert payload["metadata"]["selection_metric"] == "online_mkpe_mm"
        assert history[-1]["val_mkpe_mm"] > 0 and history[-1]["val_online_mkpe_mm"] > 0
    assert (out / "checkpoints" / "best.pt").exists()


# --------------------------------------------------------------------------------------
# DDP
# --------------------------------------------------------------------------------------
def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ddp_two_cpu_processes(dataset, reference_run, tmp_path):
    config = write_yaml(tmp_path / "ddp.yaml", tiny_config(dataset))
    out = tmp_path / "ddp_run"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               MASTER_ADDR="127.0.0.1", GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(_free_loopback_port()), "--start-method", "spawn",
               "-m", "avi_ht_ros.cli", "train", "--config", str(config), "--out", str(out), "--max-steps", "3",
               "--no-progress"]
    finished = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    reference = reference_run[0] / "checkpoints"
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    single = torch.load(reference / "last.pt", weights_only=True)
    assert checkpoint.keys() == single.keys() and checkpoint["metadata"].keys() == single["metadata"].keys()
    assert {k: v.shape for k, v in checkpoint["state_dict"].items()} == {k: v.shape for k, v in
                                                                         single["state_dict"].items()}
    assert checkpoint["metadata"]["world_size"] == 2 and checkpoint["metadata"]["global_step"] == 3
    state = torch.load(out / "checkpoints" / "last_state.pt", weights_only=True)
    assert state.keys() == torch.load(reference / "last_state.pt", weights_only=True).keys()
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    # each rank has its own sensor-dropout stream
    assert not torch.equal(state["rng"][0]["sensor_dropout"][0], state["rng"][1]["sensor_dropout"][0])
    assert sorted(step_losses(out)) == [1, 2, 3]  # rank 0 alone writes the logs
    history = json.loads((out / "metrics.json").read_text())
    assert len(history) == 1 and history[0]["val_clips"] == 14  # validation sharded, then reduced
    assert "done: 3 steps" in finished.stderr and finished.stderr.count("done:") == 1


def imu_only_checkpoint_and_fused_model(tmp_path: pathlib.Path):
    """An IMU-only model saved as a checkpoint, and a differently initialised AVI-HT model with a
    copy of its initial state: (imu_only, checkpoint path, fused, fused state before)."""
    from avi_ht_ros.models.checkpoint import save_checkpoint
    from avi_ht_ros.models.factory import build_model

    torch.manual_seed(1)
    imu_only = build_model(load_experiment_config("model_imu_only.yaml").model)
    source = save_checkpoint(tmp_path / "imu_only.pt", imu_only)
    torch.manual_seed(2)
    fused = build_model(load_experiment_config("model_avi_ht.yaml").model)
    return imu_only, source, fused, {k: v.clone() for k, v in fused.state_dict().items()}


def test_warm_start_copies_matching_parameters_only(tmp_path):
    imu_only, source, fused, before = imu_only_checkpoint_and_fused_model(tmp_path)
    copied = T.warm_start(fused, source)
    after, stored = fused.state_dict(), imu_only.state_dict()
    assert any(name.startswith("imu_encoder.") for name in copied)
    assert any(name.startswith("fusion.level1.") for name in copied)
    for name in copied:
        assert torch.equal(after[name], stored[name]), name
    for name, value in after.items():  # the vision encoder and the layout buffers are untouched
        if name.startswith("vision_encoder.") or name.endswith("token_hops"):
            assert name not in copied and torch.equal(value, before[name]), name
    with pytest.raises(ConfigError, match="init_from"):
        T.with_overrides(T.load_train_config("train_avi_ht.yaml"), init_from=str(tmp_path / "none.pt"))


def test_frozen_modules_keep_their_weights_and_statistics_while_the_rest_trains(dataset, reference_run, tmp_path):
    """training.frozen_modules: [vision_encoder] adapts only the glove side: the vision encoder's
    parameters and batch-norm statistics are bit-identical to the warm start, everything else moves."""
    start = reference_run[0] / "checkpoints" / "last.pt"
    data = tiny_config(dataset, max_steps=4, init_from=str(start))
    data["training"]["frozen_modules"] = ["vision_encoder"]
    trainer = T.Trainer(T.train_config_from_dict(data), tmp_path / "frozen", show_progress=False, log=None)
    trainer.run()
    before, after = state_dict(start), state_dict(tmp_path / "frozen" / "checkpoints" / "last.pt")
    vision = [name for name in before if name.startswith("vision_encoder.")]
    assert any(name.endswith("running_mean") for name in vision)
    for name in vision:
        assert torch.equal(before[name], after[name]), name
    moved = {name.split(".")[0] for name in before
             if not name.startswith("vision_encoder.") and not torch.equal(before[name], after[name])}
    assert {"imu_encoder", "fusion", "head"} <= moved
    assert all(p.requires_grad is False for p in trainer.model.vision_encoder.parameters())
    assert len(trainer.optimizer.param_groups[0]["params"]) == sum(
        1 for name, _ in trainer.model.named_parameters() if not name.startswith("vision_encoder."))
    # an interrupted frozen run resumes to the same weights (the optimiser holds only the trained parts)
    T.Trainer(T.train_config_from_dict({**data, "run": {**data["run"], "max_steps": 2}}), tmp_path / "cut",
              show_progress=False, log=None).run()
    T.Trainer(T.train_config_from_dict(data), tmp_path / "cut", resume=True, show_progress=False, log=None).run()
    assert_same_weights(state_dict(tmp_path / "cut" / "checkpoints" / "last.pt"), after)
    for frozen, message in ((["camera"], "not a trainable part.*vision_encoder"),
                            (["vision_encoder", "imu_encoder", "fusion", "head"], "whole model"),
                            (["head", "head"], "distinct")):
        data["training"]["frozen_modules"] = frozen
        with pytest.raises(ConfigError, match=message):
            T.Trainer(T.train_config_from_dict(data), tmp_path / "bad", show_progress=False, log=None)


def test_init_parts_replace_a_whole_part_from_another_checkpoint_or_refuse(tmp_path):
    """run.init_parts / --init-part PART=CHECKPOINT: after the warm start, one part of the model
    comes whole from another checkpoint (AVI-HT's IMU encoder from an IMU-only run); a part the
    checkpoint cannot fill completely is refused rather than half-copied."""
    imu_only, source, fused, before = imu_only_checkpoint_and_fused_model(tmp_path)
    copied = T.init_part(fused, "imu_encoder", source)
    after, stored = fused.state_dict(), imu_only.state_dict()
    assert copied and all(name.startswith("imu_encoder.") for name in copied)
    for name, value in after.items():
        if name in copied:
            assert torch.equal(value, stored[name]), name
        else:  # every other part, and the IMU encoder's glove-layout buffer, as they were
            assert torch.equal(value, before[name]), name
    assert any(name.startswith("imu_encoder.") and name not in copied for name in after)  # the layout buffer
    for part, message in (("fusion", "has no fusion.level2"), ("vision_encoder", "has no vision_encoder"),
                          ("glove", "not a trainable part")):
        with pytest.raises(ConfigError, match=message):
            T.init_part(fused, part, source)
    base = T.load_train_config("train_avi_ht.yaml")
    config = T.with_overrides(base, init_parts=[f"imu_encoder={source}"])
    assert config.run.init_parts == (f"imu_encoder={source}",)
    for entries, message in (([str(source)], "PART=CHECKPOINT"), (["imu_encoder=" + str(tmp_path / "none.pt")],
                                                                  "no such checkpoint"),
                             ([f"head={source}", f"head={source}"], "one checkpoint per part")):
        with pytest.raises(ConfigError, match=message):
            T.with_overrides(base, init_parts=entries)
