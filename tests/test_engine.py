"""The training engine: exact resume, validation cadence, best selection, metrics files, evaluate."""

import csv
import dataclasses
import json
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from foveal.checkpoint import load_checkpoint, read_checkpoint_info
from foveal.training import LossOutput, TrainConfig, evaluate, fit
from foveal.training.loop import IterationBatches


class Blobs(Dataset):
    """Three Gaussian blobs in 4-D, items in the foveal format ``{"image": [1, 2, 2], "label", "index"}``."""

    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        centres = torch.tensor([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
        self.labels = torch.arange(n) % 3
        self.x = centres[self.labels] + torch.randn(n, 4, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": self.x[i].view(1, 2, 2), "label": self.labels[i], "index": i}


class MLP(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))

    def forward(self, x):
        return self.net(x)


class NoisyCE:
    """Cross-entropy with input noise and dropout in training, and a sampled prediction in metrics:
    all three consume the global torch RNG, so an exact resume needs the RNG state restored."""

    def loss(self, model, batch):
        logits = model(batch["image"] + 0.1 * torch.randn_like(batch["image"]))
        ce = F.cross_entropy(logits, batch["label"])
        return LossOutput(ce, {"ce": ce.item(), "noise": random.random()})

    @torch.no_grad()
    def metrics(self, model, batch):
        logits = model(batch["image"])
        sampled = torch.multinomial(logits.softmax(-1), 1).squeeze(1)
        return {"accuracy": (logits.argmax(-1) == batch["label"]).float().mean().item(),
                "ce": F.cross_entropy(logits, batch["label"]).item(),
                "sampled_accuracy": (sampled == batch["label"]).float().mean().item()}


TRAIN, VAL = Blobs(96, seed=1), Blobs(40, seed=2)
BASE = TrainConfig(iterations=40, batch_size=16, lr=1e-2, val_every=10, log_every=3, eval_batch_size=16,
                   seed=7, device="cpu", tensorboard=False, lr_schedule="cosine", grad_clip=5.0)


def rows(run_dir, split=None):
    with open(run_dir / "metrics.csv", newline="") as f:
        found = list(csv.DictReader(f))
    return [r for r in found if split is None or r["split"] == split]


def test_exact_resume_after_a_kill(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    info = {"model": {"name": "mlp"}}
    model_a = MLP(seed=0)
    result_a = fit(model_a, NoisyCE(), TRAIN, VAL, BASE, a, info=info)
    assert result_a.iterations == 40

    # "killed" after iteration 17: the last checkpoint is from iteration 10, metrics.csv has rows up to 15
    first = fit(MLP(seed=0), NoisyCE(), TRAIN, VAL, BASE, b, info=info, stop_after=17)
    assert first.iterations == 17 and read_checkpoint_info(b / "checkpoints" / "last") == info
    assert load_checkpoint(b / "checkpoints" / "last").iteration == 10
    assert max(int(r["iteration"]) for r in rows(b)) == 15
    torch.manual_seed(12345)  # the resumed process starts with another RNG state and other weights
    random.seed(12345)
    model_b = MLP(seed=3)
    result_b = fit(model_b, NoisyCE(), TRAIN, VAL, BASE, b, info=info)

    assert (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()
    for name, value in model_a.state_dict().items():
        assert torch.equal(value, model_b.state_dict()[name]), name
    for ckpt in ("best.json", "best.safetensors", "last.safetensors"):
        assert (a / "checkpoints" / ckpt).read_bytes() == (b / "checkpoints" / ckpt).read_bytes(), ckpt
    last_a, last_b = (json.loads((d / "checkpoints" / "last.json").read_text()) for d in (a, b))
    # the training time is the one thing that differs: it adds up over both calls of the killed run
    # (and so does the JSON's hash of itself, which covers it)
    seconds_a, seconds_b = (d["extra_state"].pop("train_seconds") for d in (last_a, last_b))
    assert all(len(d.pop("json_sha256")) == 64 for d in (last_a, last_b))
    assert last_a == last_b and seconds_a > 0 and seconds_b > 0
    assert result_b.run_time >= result_b.wall_time and result_b.run_iterations_per_second > 0
    assert (result_a.best_value, result_a.best_iteration, result_a.val_metrics) == \
           (result_b.best_value, result_b.best_iteration, result_b.val_metrics)
    # resuming a finished run does nothing more
    done = fit(MLP(seed=0), NoisyCE(), TRAIN, VAL, BASE, b, info=info)
    assert done.iterations == 40 and (a / "metrics.csv").read_text() == (b / "metrics.csv").read_text()


def test_metrics_csv_is_cut_back_to_the_checkpoint(tmp_path):
    fit(MLP(), NoisyCE(), TRAIN, VAL, BASE, tmp_path, stop_after=17)
    assert {r["iteration"] for r in rows(tmp_path, "val")} == {"10"}
    assert {int(r["iteration"]) for r in rows(tmp_path, "train")} == {3, 6, 9, 12, 15}
    # a call that stops before doing anything still truncates to the checkpoint's iteration (10)
    result = fit(MLP(), NoisyCE(), TRAIN, VAL, BASE, tmp_path, stop_after=5)
    assert result.iterations == 10
    assert {int(r["iteration"]) for r in rows(tmp_path)} == {3, 6, 9, 10}
    # a row cut in mid-write by a kill ("1" of "12,train,...") is dropped, not read as iteration 1
    with open(tmp_path / "metrics.csv", "a") as f:
        f.write("1")
    fit(MLP(), NoisyCE(), TRAIN, VAL, BASE, tmp_path, stop_after=5)
    assert {int(r["iteration"]) for r in rows(tmp_path)} == {3, 6, 9, 10}
    assert (tmp_path / "metrics.csv").read_text().endswith("\n")
    # stale rows without any checkpoint (killed before the first one): a fresh run starts a fresh file
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "metrics.csv").write_text("iteration,split,name,value\n5,train,loss,1.0\n")
    fit(MLP(), NoisyCE(), TRAIN, VAL, dataclasses.replace(BASE, iterations=2), fresh)
    assert [r["iteration"] for r in rows(fresh)].count("5") == 0


def test_learning_happens_and_files_are_written(tmp_path):
    config = dataclasses.replace(BASE, iterations=60, val_every=30, log_every=10, tensorboard=True)
    calls = []
    result = fit(MLP(), NoisyCE(), TRAIN, VAL, config, tmp_path, progress=lambda i, n, logs: calls.append((i, n)))
    losses = [float(r["value"]) for r in rows(tmp_path, "train") if r["name"] == "loss"]
    assert len(losses) == 6 and losses[-1] < 0.6 * losses[0]
    assert result.val_metrics["val/accuracy"] > 0.8 and result.best_value == max(
        float(r["value"]) for r in rows(tmp_path, "val") if r["name"] == "accuracy")
    names = {r["name"] for r in rows(tmp_path, "train")}
    assert names == {"loss", "ce", "noise"}  # timing (it_per_s) stays out of metrics.csv
    assert calls == [(i, 60) for i in range(1, 61)]
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
    assert result.iterations_per_second > 0 and result.best_checkpoint == tmp_path / "checkpoints" / "best"


class Scripted:
    """Validation reports the next value of ``scores`` (one val batch per validation)."""

    def __init__(self, scores):
        self.scores = list(scores)

    def loss(self, model, batch):
        return LossOutput(model(batch["image"]).square().mean())

    @torch.no_grad()
    def metrics(self, model, batch):
        return {"accuracy": self.scores.pop(0), "ce": 0.0}


@pytest.mark.parametrize("mode, best_iteration, best_value", [("max", 12, 0.5), ("min", 8, 0.1)])
def test_validation_cadence_and_best_selection(tmp_path, mode, best_iteration, best_value):
    config = dataclasses.replace(BASE, iterations=18, val_every=4, checkpoint_every=6, val_batches=1,
                                 monitor_mode=mode, lr_schedule="constant")
    result = fit(MLP(), Scripted([0.3, 0.1, 0.5, 0.2, 0.4]), TRAIN, VAL, config, tmp_path)
    val = rows(tmp_path, "val")
    assert [int(r["iteration"]) for r in val if r["name"] == "accuracy"] == [4, 8, 12, 16, 18]  # and the last
    assert (result.best_iteration, result.best_value) == (best_iteration, best_value)
    best = json.loads((tmp_path / "checkpoints" / "best.json").read_text())
    assert best["iteration"] == best_iteration and best["metrics"]["val"]["accuracy"] == best_value
    assert load_checkpoint(tmp_path / "checkpoints" / "last").iteration == 18
    # `last` is also written every checkpoint_every iterations
    killed = tmp_path / "killed"
    fit(MLP(), Scripted([0.3, 0.1]), TRAIN, VAL, config, killed, stop_after=7)
    assert load_checkpoint(killed / "checkpoints" / "last").iteration == 6


def test_resume_with_other_training_settings_is_refused(tmp_path):
    fit(MLP(), NoisyCE(), TRAIN, VAL, BASE, tmp_path, stop_after=10)
    with pytest.raises(ValueError, match=r"last.json: cannot resume.*TrainConfig.lr=0.01 there, 0.02 now"):
        fit(MLP(), NoisyCE(), TRAIN, VAL, dataclasses.replace(BASE, lr=0.02), tmp_path)


def test_a_finished_constant_rate_run_continues_to_more_iterations_as_one_longer_run(tmp_path):
    constant = dataclasses.replace(BASE, lr_schedule="constant", log_every=5)
    info = {"model": {"name": "mlp"}}
    whole, model_whole = tmp_path / "whole", MLP(seed=0)
    fit(model_whole, NoisyCE(), TRAIN, VAL, constant, whole, info=info)
    part, model_part = tmp_path / "part", MLP(seed=0)
    assert fit(model_part, NoisyCE(), TRAIN, VAL, dataclasses.replace(constant, iterations=20), part,
               info=info).iterations == 20
    assert fit(model_part, NoisyCE(), TRAIN, VAL, constant, part, info=info).iterations == 40
    assert (whole / "metrics.csv").read_text() == (part / "metrics.csv").read_text()
    for name, value in model_whole.state_dict().items():
        assert torch.equal(value, model_part.state_dict()[name]), name


def test_run_folder_accepts_only_a_longer_constant_rate_run(tmp_path):
    from foveal.config import load_config
    from foveal.recipes.run import prepare_run_dir

    from foveal.checkpoint import save_checkpoint

    cfg = load_config("demo")
    cfg["train"].update(iterations=100, lr_schedule="constant")
    prepare_run_dir(cfg, tmp_path)
    # a folder without a checkpoint holds nothing to resume (a start that failed): any config takes it over
    other = {**cfg, "train": {**cfg["train"], "lr": 0.5}}
    prepare_run_dir(other, tmp_path)
    assert "lr: 0.5" in (tmp_path / "config.yaml").read_text()
    prepare_run_dir(cfg, tmp_path)
    save_checkpoint(tmp_path / "checkpoints" / "last", model=None)  # from here on, the folder holds a run
    longer = {**cfg, "train": {**cfg["train"], "iterations": 300}}
    prepare_run_dir(longer, tmp_path)  # allowed, and recorded
    assert "iterations: 300" in (tmp_path / "config.yaml").read_text()
    # when it stops and how often it saves do not change what it computes: allowed too
    settling = {**longer, "train": {**longer["train"], "patience": 50, "patience_on": ["val/ce:min"],
                                    "checkpoint_every": 10}}
    prepare_run_dir(settling, tmp_path)
    assert "patience: 50" in (tmp_path / "config.yaml").read_text()
    for bad in ({**longer, "train": {**longer["train"], "iterations": 200}},  # shorter
                {**longer, "train": {**longer["train"], "iterations": 400, "lr": 0.5}},  # longer and another lr
                {**longer, "train": {**longer["train"], "iterations": 400, "lr_schedule": "cosine"}}):
        with pytest.raises(ValueError, match=r"made with another config.*only train.iterations may grow"):
            prepare_run_dir(bad, tmp_path)


class Counting:
    """metrics = the batch's mean label and its size: checks weighting, mode and no_grad."""

    def __init__(self):
        self.seen = []

    @torch.no_grad()
    def metrics(self, model, batch):
        assert not model.training and not torch.is_grad_enabled()
        self.seen.append(batch["index"].tolist())
        return {"mean_label": batch["label"].float().mean().item(), "size": float(len(batch["label"]))}


class Labels(Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"image": torch.zeros(1, 1, 1), "label": torch.tensor(i), "index": i}


@pytest.mark.parametrize("training", [True, False])
def test_evaluate_weights_batches_by_size(training):
    model = MLP().train(training)
    algorithm = Counting()
    metrics = evaluate(model, algorithm, Labels(), batch_size=4, device="cpu")  # batches of 4, 4, 2
    assert metrics == {"mean_label": 4.5, "size": (4 * 4 + 4 * 4 + 2 * 2) / 10}  # not (1.5 + 5.5 + 8.5) / 3
    assert algorithm.seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # dataset order
    assert model.training == training
    assert evaluate(model, Counting(), Labels(), batch_size=4, device="cpu", max_batches=2)["mean_label"] == 3.5


def test_data_order_is_a_function_of_the_iteration():
    full = list(IterationBatches(10, 3, seed=0, start=0, end=9))  # 3 batches per epoch, one item dropped
    assert list(IterationBatches(10, 3, seed=0, start=4, end=9)) == full[4:]
    for epoch in range(3):
        items = sum(full[3 * epoch:3 * epoch + 3], [])
        assert len(set(items)) == 9
    assert full[:3] != full[3:6] and full != list(IterationBatches(10, 3, seed=1, start=0, end=9))
    with pytest.raises(ValueError, match="train set has 10 items, fewer than TrainConfig.batch_size=16"):
        IterationBatches(10, 16, seed=0, start=0, end=1)


@pytest.mark.parametrize("field, value, message", [
    ("val_every", 0, "TrainConfig.val_every: expected a positive integer, found 0"),
    ("batch_size", True, "TrainConfig.batch_size: expected a positive integer, found True"),
    ("lr", "1e-3", "TrainConfig.lr: expected a positive number, found '1e-3'"),
    ("grad_clip", -1.0, "TrainConfig.grad_clip: expected None or a positive number, found -1.0"),
    ("optimizer", "rmsprop", "TrainConfig.optimizer: expected one of ['adam', 'adamw', 'sgd'], found 'rmsprop'"),
    ("monitor", "accuracy", "TrainConfig.monitor: expected a validation metric 'val/<name>', found 'accuracy'"),
    ("monitor_mode", "best", "TrainConfig.monitor_mode: expected one of ['max', 'min'], found 'best'"),
    ("device", "tpu", "TrainConfig.device: expected 'auto', 'cpu', 'cuda' or 'cuda:N', found 'tpu'"),
    ("num_workers", -1, "TrainConfig.num_workers: expected an integer >= 0, found -1"),
])
def test_config_validation(field, value, message):
    with pytest.raises(ValueError) as err:
        dataclasses.replace(BASE, **{field: value})
    assert str(err.value) == message


def test_config_defaults():
    config = TrainConfig(iterations=10, batch_size=4, lr=1e-3, val_every=5)
    assert config.checkpoint_every is None and config.eval_batch_size is None and config.monitor == "val/accuracy"


def test_unknown_monitor_metric_is_named(tmp_path):
    config = dataclasses.replace(BASE, iterations=2, val_every=2, monitor="val/f1")
    with pytest.raises(ValueError, match=r"'val/f1' is not among the validation metrics \['val/accuracy'"):
        fit(MLP(), NoisyCE(), TRAIN, VAL, config, tmp_path)


class InterruptedAt(NoisyCE):
    def __init__(self, iteration):
        self.calls, self.iteration = 0, iteration

    def loss(self, model, batch):
        self.calls += 1
        if self.calls == self.iteration:
            raise KeyboardInterrupt
        return super().loss(model, batch)


def test_keyboard_interrupt_leaves_a_resumable_run(tmp_path):
    config = dataclasses.replace(BASE, iterations=20)
    fit(MLP(), NoisyCE(), TRAIN, VAL, config, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        fit(MLP(), InterruptedAt(13), TRAIN, VAL, config, tmp_path / "run")
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last").iteration == 10
    fit(MLP(), NoisyCE(), TRAIN, VAL, config, tmp_path / "run")
    assert (tmp_path / "run" / "metrics.csv").read_text() == (tmp_path / "straight" / "metrics.csv").read_text()


class PlainCE:
    """Cross-entropy without noise or Python-side randomness: a compiled and an eager run must agree."""

    def loss(self, model, batch):
        ce = F.cross_entropy(model(batch["image"]), batch["label"])
        return LossOutput(ce, {"ce": ce.detach()})

    @torch.no_grad()
    def metrics(self, model, batch):
        return {"accuracy": (model(batch["image"]).argmax(-1) == batch["label"]).float().mean().item()}


def test_compiled_loss_trains_like_the_eager_one_and_resumes_either_way(tmp_path):
    config = dataclasses.replace(BASE, iterations=12, val_every=6, log_every=3, seed=3)
    eager = fit(MLP(), PlainCE(), TRAIN, VAL, dataclasses.replace(config, compile=False), tmp_path / "eager")
    half = fit(MLP(), PlainCE(), TRAIN, VAL, dataclasses.replace(config, compile=True), tmp_path / "mixed", stop_after=6)
    assert half.iterations == 6
    mixed = fit(MLP(), PlainCE(), TRAIN, VAL, dataclasses.replace(config, compile=False), tmp_path / "mixed")
    assert mixed.val_metrics == pytest.approx(eager.val_metrics)
    for a, b in zip(rows(tmp_path / "eager", "train"), rows(tmp_path / "mixed", "train")):
        assert a["name"] == b["name"] and float(a["value"]) == pytest.approx(float(b["value"]), rel=1e-5)
    with pytest.raises(ValueError, match="TrainConfig.compile: expected true or false, found 'yes'"):
        dataclasses.replace(config, compile="yes")


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_the_engines_optimizer_steps_like_the_per_parameter_loop(name):
    from foveal.training.engine import _build_optimizer

    config = dataclasses.replace(BASE, optimizer=name, weight_decay=0.01)
    ours, plain = MLP(seed=1), MLP(seed=1)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}[name]
    extra = {"momentum": config.momentum} if name == "sgd" else {}
    optimizers = [_build_optimizer(list(ours.parameters()), config),
                  cls(plain.parameters(), lr=config.lr, weight_decay=0.01, foreach=False, **extra)]
    for i in range(5):
        for model, optimizer in zip((ours, plain), optimizers):
            model.eval()  # no dropout: the two models see the same function
            optimizer.zero_grad()
            F.cross_entropy(model(TRAIN.x[16 * i:16 * i + 16]), TRAIN.labels[16 * i:16 * i + 16]).backward()
            optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), plain.parameters()))


class ScriptedCE(Scripted):
    """Validation accuracy and cross-entropy from two scripts, one value of each per validation."""

    def __init__(self, scores, ces):
        super().__init__(scores)
        self.ces = list(ces)

    @torch.no_grad()
    def metrics(self, model, batch):
        return {"accuracy": self.scores.pop(0), "ce": self.ces.pop(0)}


def test_patience_stops_a_settled_run_and_a_second_call_trains_nothing(tmp_path):
    # validations at 4, 8, ..., best accuracy at 8; with patience 8 the run has settled at 16
    config = dataclasses.replace(BASE, iterations=40, val_every=4, val_batches=1, lr_schedule="constant", patience=8)
    result = fit(MLP(), Scripted([0.3, 0.5, 0.4, 0.5, 0.2] + [0.9] * 5), TRAIN, VAL, config, tmp_path)
    assert (result.iterations, result.settled, result.best_iteration) == (16, True, 8)
    assert load_checkpoint(tmp_path / "checkpoints" / "last").iteration == 16
    assert max(int(r["iteration"]) for r in rows(tmp_path)) == 16
    again = fit(MLP(), Scripted([]), TRAIN, VAL, config, tmp_path)  # no validation left to pop: none is run
    assert (again.iterations, again.settled) == (16, True)
    # a longer patience continues it, exactly where it stopped
    longer = fit(MLP(), Scripted([0.1, 0.1, 0.1, 0.1]), TRAIN, VAL, dataclasses.replace(config, patience=24),
                 tmp_path)
    assert (longer.iterations, longer.settled) == (32, True)


def test_patience_waits_for_every_named_metric(tmp_path):
    # accuracy settles at 4, cross-entropy still falls until 12: with val/ce in patience_on it stops at 20
    config = dataclasses.replace(BASE, iterations=40, val_every=4, val_batches=1, lr_schedule="constant", patience=8,
                                 patience_on=("val/ce:min",))
    result = fit(MLP(), ScriptedCE([0.5] * 10, [1.0, 0.9, 0.8, 0.85, 0.9] + [1.0] * 5), TRAIN, VAL, config,
                 tmp_path / "both")
    assert (result.iterations, result.settled) == (20, True)
    alone = fit(MLP(), ScriptedCE([0.5] * 10, [1.0, 0.9, 0.8, 0.85] + [1.0] * 6), TRAIN, VAL,
                dataclasses.replace(config, patience_on=()), tmp_path / "accuracy")
    assert (alone.iterations, alone.settled) == (12, True)


def test_a_run_that_never_settles_trains_to_the_cap(tmp_path):
    config = dataclasses.replace(BASE, iterations=12, val_every=4, val_batches=1, lr_schedule="constant", patience=8)
    result = fit(MLP(), Scripted([0.1, 0.2, 0.3]), TRAIN, VAL, config, tmp_path)
    assert (result.iterations, result.settled) == (12, False)


@pytest.mark.parametrize("value", [["ce"], ["val/ce"], ["val/ce:up"], "val/ce:min"])
def test_patience_on_is_checked(value):
    with pytest.raises(ValueError, match="TrainConfig.patience_on: expected a list of 'val/<name>:min'"):
        dataclasses.replace(BASE, patience_on=value)
