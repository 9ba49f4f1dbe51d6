"""Partial supervision (Eq. 8): where each term's gradient goes, mixed / pure batches, files, oversampling."""

import pytest
import torch

from foveal.data import DataError
from foveal.models import create_model
from foveal.policies.basic import ReplayPolicy
from foveal.retina import LocationGrid
from foveal.sequences import GlimpseSequences
from foveal.training.loop import FixedShareBatches, IterationBatches
from foveal.training.partial_supervision import (FixedShareDataset, OversampledDataset, PartialSupervision,
                                                 PartialSupervisionConfig, oversampling_repeats)
from foveal.training.reinforce import Reinforce, ReinforceConfig

SIZE, G, T = (16, 16), 4, 3
GRID = LocationGrid.from_stride(SIZE, G, 4)  # 4 x 4 cells
SMALL = dict(glimpse_size=G, hidden_size=8, glimpse_hidden=8, location_hidden=8, feature_size=8)


class Toy:
    """A split as the sequence files see it: name, split, image shape, length."""

    name, split, image_shape = "toy", "train", (1, *SIZE)

    def __init__(self, n=12):
        self.labels = torch.arange(n) % 3

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"image": torch.full((1, *SIZE), i / 10), "label": self.labels[i], "index": i}


def grid_model(seed=0):
    torch.manual_seed(seed)
    return create_model("ram-grid", in_channels=1, num_classes=3, image_size=SIZE, grid_stride=4, **SMALL)


def sequence_file(tmp_path, indices=(0, 2, 5, 7), T_seq=T, grid=GRID, name="seqs"):
    cells = torch.arange(len(indices) * T_seq).view(len(indices), T_seq) * 5 % len(grid)
    seqs = GlimpseSequences("toy", "train", SIZE, G, torch.tensor(indices), grid.corners()[cells], grid=grid,
                            method="random")
    seqs.save(tmp_path / name)
    return str(tmp_path / name)


def batch(indices):
    idx = torch.tensor(indices)
    g = torch.Generator().manual_seed(1)
    return {"image": torch.rand(len(idx), 1, *SIZE, generator=g), "label": idx % 3, "index": idx}


def algorithm(path, **kw):
    return PartialSupervision(PartialSupervisionConfig(num_glimpses=T, sequences=path, **kw))


def grads(model):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in model.named_parameters()}


def nonzero_groups(model):
    return {n.split(".")[0] for n, g in grads(model).items() if g.abs().sum() > 0}


def test_sequence_term_reaches_only_the_location_net_through_forced_log_prob(tmp_path):
    model = grid_model()
    alg = algorithm(sequence_file(tmp_path), ce_weight=0.0, sequence_weight=1.0, weighting="per-example")
    b = batch([0, 2, 5, 7])  # all supervised
    out = alg.loss(model, b)
    out.loss.backward()
    assert nonzero_groups(model) == {"location_net"}  # not the core, glimpse net, classifier or baseline
    forced, has = alg.sequences.lookup(b["index"])
    assert has.all()
    replay = model.rollout(b["image"], T, policy=ReplayPolicy(forced))  # the same locations, chosen by a policy
    assert out.loss.item() == pytest.approx(-replay.log_prob.sum(1).mean().item(), rel=1e-6)
    assert out.logs["supervised"] == 1.0 and out.logs["sequence_nll"] == pytest.approx(out.loss.item(), rel=1e-6)
    assert out.logs["reinforce"] == 0.0 and out.logs["baseline_mse"] == 0.0


def test_reinforce_gets_no_gradient_from_supervised_images(tmp_path):
    path = sequence_file(tmp_path)
    model = grid_model()
    # Only supervised images and no sequence term: nothing may reach the location net or the baseline.
    alg = algorithm(path, sequence_weight=0.0, weighting="per-example")
    alg.loss(model, batch([0, 2, 5])).loss.backward()
    assert "location_net" not in nonzero_groups(model) and "baseline_net" not in nonzero_groups(model)
    # Mixed batch: the location-net and baseline gradients are those of REINFORCE on the unsupervised
    # images alone, scaled by their share; relabelling the supervised images (their reward) changes nothing.
    mixed = batch([0, 1, 2, 3, 4, 5])  # 0, 2, 5 supervised; 1, 3, 4 not
    results = []
    for labels in (mixed["label"], torch.tensor([1, 1, 2, 0, 1, 0])):  # second: supervised images relabelled
        model.zero_grad()
        torch.manual_seed(7)
        alg.loss(model, {**mixed, "label": labels}).loss.backward()
        results.append(grads(model))
    model.zero_grad()
    torch.manual_seed(7)
    keep = torch.tensor([1, 3, 4])
    alone = Reinforce(ReinforceConfig(num_glimpses=T)).loss(model, {k: v[keep] for k, v in mixed.items()})
    (0.5 * alone.loss).backward()
    expected = grads(model)
    for name in expected:
        if name.startswith(("location_net", "baseline_net")):
            assert torch.allclose(results[0][name], expected[name], atol=1e-7), name
            assert torch.allclose(results[1][name], expected[name], atol=1e-7), name
    assert expected["location_net.weight"].abs().sum() > 0  # the check is not vacuous


def test_pure_and_mixed_batches(tmp_path):
    path = sequence_file(tmp_path)
    model = grid_model()
    alg = algorithm(path, sequence_weight=2.0, weighting="per-example")
    # only unsupervised: exactly the REINFORCE hybrid loss
    torch.manual_seed(3)
    out = alg.loss(model, batch([1, 3, 4]))
    torch.manual_seed(3)
    ref = Reinforce(ReinforceConfig(num_glimpses=T)).loss(model, batch([1, 3, 4]))
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-6)
    assert out.logs["supervised"] == 0.0 and out.logs["sequence_nll"] == 0.0
    assert out.logs["reinforce"] == pytest.approx(float(ref.logs["reinforce"]), rel=1e-6)
    # only supervised: CE + 2 * NLL of the forced locations
    sup = batch([0, 2, 5, 7])
    out = alg.loss(model, sup)
    forced, _ = alg.sequences.lookup(sup["index"])
    ro = model.rollout(sup["image"], T, forced_locations=forced)
    ce = torch.nn.functional.cross_entropy(ro.logits[:, -1], sup["label"])
    assert out.loss.item() == pytest.approx(ce.item() + 2.0 * -ro.log_prob.sum(1).mean().item(), rel=1e-5)
    assert torch.isfinite(out.loss)
    # mixed: batch mean of the per-image losses, each group weighted by its share
    mixed = batch([0, 1, 2, 3])
    out = alg.loss(model, mixed)
    out.loss.backward()
    assert out.logs["supervised"] == 0.5 and torch.isfinite(out.loss)
    assert {"location_net", "baseline_net", "classifier", "core", "glimpse"} <= nonzero_groups(model)


def location_grad(model, alg, b, seed=7):
    model.zero_grad()
    torch.manual_seed(seed)
    alg.loss(model, b).loss.backward()
    return model.location_net.weight.grad.clone()


def test_official_sequence_term_is_a_sum_whose_gradient_does_not_change_with_the_batch_size(tmp_path):
    path = sequence_file(tmp_path)  # images 0, 2, 5, 7 have sequences
    model = grid_model()
    only = dict(ce_weight=0.0, baseline_weight=0.0, reinforce_weight=0.0, sequence_weight=1.5)
    official, literal = algorithm(path, **only), algorithm(path, weighting="per-example", **only)
    small, large = batch([0, 2]), batch([0, 2, 1, 3, 4, 6, 8, 9])  # k = 2 supervised in B = 2 and B = 8
    large = {**large, "image": torch.cat([small["image"], large["image"][2:]])}  # the same two supervised images
    # the official formula: -w * sum over supervised images and glimpses of log pi(forced location)
    model.zero_grad()
    forced, _ = official.sequences.lookup(small["index"])
    (-1.5 * model.rollout(small["image"], T, forced_locations=forced).log_prob.sum()).backward()
    formula = model.location_net.weight.grad.clone()
    assert formula.abs().sum() > 0
    assert torch.allclose(location_grad(model, official, small), formula, atol=1e-6)
    assert torch.allclose(location_grad(model, official, large), formula, atol=1e-6)  # k fixed, B x 4: unchanged
    # the per-example reading weighs each supervised image w / B: B times weaker, and it shrinks with B
    assert torch.allclose(location_grad(model, literal, small), formula / 2, atol=1e-6)
    assert torch.allclose(location_grad(model, literal, large), formula / 8, atol=1e-6)


def test_official_weighting_term_by_term_on_a_mixed_batch(tmp_path):
    path = sequence_file(tmp_path)
    model = grid_model()
    alg = algorithm(path, sequence_weight=0.5)  # weighting="official" is the default
    mixed = batch([0, 1, 2, 3, 4, 5])  # 0, 2, 5 supervised; 1, 3, 4 not
    torch.manual_seed(5)
    out = alg.loss(model, mixed)
    torch.manual_seed(5)
    unsup = torch.tensor([1, 3, 4])
    ref = Reinforce(ReinforceConfig(num_glimpses=T)).loss(model, {k: v[unsup] for k, v in mixed.items()})
    sup = torch.tensor([0, 2, 5])
    forced, _ = alg.sequences.lookup(mixed["index"][sup])
    ro = model.rollout(mixed["image"][sup], T, forced_locations=forced)
    ce = torch.nn.functional.cross_entropy(ro.logits[:, -1], mixed["label"][sup])
    reward = (ro.logits[:, -1].argmax(-1) == mixed["label"][sup]).float()
    mse = torch.nn.functional.mse_loss(ro.baseline, reward[:, None].expand_as(ro.baseline))
    # CE and baseline regression: means over all 6 images; REINFORCE over the unsupervised ones / 6;
    # the sequence term: 0.5 * the sum over the 3 supervised images
    expected = 0.5 * ref.loss + 0.5 * (ce + mse) + 0.5 * -ro.log_prob.sum()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logs["sequence_term"] == pytest.approx(0.5 * -ro.log_prob.sum().item(), rel=1e-5)
    assert out.logs["sequence_nll"] == pytest.approx(0.5 * -ro.log_prob.sum(1).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"PartialSupervisionConfig.weighting: expected one of \('official', "
                                         r"'per-example'\), found 'mean'"):
        algorithm(path, weighting="mean")


def test_gaussian_model_learns_the_sequence_locations(tmp_path):
    torch.manual_seed(0)
    model = create_model("ram", in_channels=1, num_classes=3, image_size=SIZE, location_std=0.2, **SMALL)
    alg = algorithm(sequence_file(tmp_path), ce_weight=0.0)
    b = batch([0, 2, 5, 7])
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(30):
        out = alg.loss(model, b)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.loss.item()
    assert out.loss.item() < first - 1.0  # the policy moves towards the supervision sequences


def test_files_grids_and_config_errors(tmp_path):
    with pytest.raises(ValueError, match="sequences: expected the path"):
        PartialSupervisionConfig()
    with pytest.raises(ValueError, match="supervised_fraction"):
        PartialSupervisionConfig(sequences="x", supervised_fraction=0.0)
    with pytest.raises(ValueError, match="train_policy"):
        PartialSupervisionConfig(sequences="x", train_policy="random")
    with pytest.raises(FileNotFoundError):
        algorithm(str(tmp_path / "missing")).loss(grid_model(), batch([0]))
    short = sequence_file(tmp_path, T_seq=2, name="short")
    with pytest.raises(ValueError, match="2 glimpses, fewer than algorithm.num_glimpses=3"):
        algorithm(short).loss(grid_model(), batch([0]))
    other = sequence_file(tmp_path, grid=LocationGrid.from_stride(SIZE, G, 6), name="other")  # rows 0, 6, 12
    with pytest.raises(ValueError, match="off_grid=snap"):
        algorithm(other).loss(grid_model(), batch([0, 1]))
    assert torch.isfinite(algorithm(other, off_grid="snap").loss(grid_model(), batch([0, 1])).loss)
    with pytest.raises(ValueError, match="16x16 images"):
        algorithm(sequence_file(tmp_path)).loss(grid_model(), {**batch([0]), "image": torch.rand(1, 1, 8, 8)})


def test_prepare_validates_against_the_training_set(tmp_path):
    path = sequence_file(tmp_path)
    alg = algorithm(path)
    train = Toy()
    assert alg.prepare(train) is train
    val = Toy()
    val.split = "val"
    with pytest.raises(DataError, match="'split'"):
        alg.prepare(val)
    with pytest.raises(DataError, match="positions < 4"):
        alg.prepare(Toy(n=4))  # index 7 is past the end
    assert len(algorithm(path, num_sequences=2).sequences) == 2


def test_oversampling_is_deterministic_and_reaches_the_fraction(tmp_path):
    assert oversampling_repeats(10, 990, 0.5) == 99 and oversampling_repeats(10, 990, 0.01) == 1
    assert oversampling_repeats(3, 0, 0.2) == 1
    alg = algorithm(sequence_file(tmp_path), supervised_fraction=0.5, oversampling="repeat")  # 4 supervised of 12
    with pytest.raises(ValueError, match="prepare"):  # oversampling cannot be skipped silently
        alg.loss(grid_model(), batch([0, 1]))
    data = alg.prepare(Toy())
    assert isinstance(data, OversampledDataset) and data.repeats == 2 and len(data) == 8 + 8
    assert data.name == "toy" and data.image_shape == (1, *SIZE) and len(data.labels) == 16
    served = [data[v]["index"] for v in range(len(data))]
    assert sorted(served) == sorted([i for i in range(12) if i not in (0, 2, 5, 7)] + [0, 2, 5, 7] * 2)
    batches = list(IterationBatches(len(data), 4, seed=0, start=0, end=40))
    share = sum(data[v]["index"] in (0, 2, 5, 7) for b in batches for v in b) / (40 * 4)
    assert share == pytest.approx(0.5, abs=1e-9)  # whole epochs: exactly half
    again = list(IterationBatches(len(data), 4, seed=0, start=20, end=40))
    assert again == batches[20:]  # resuming at iteration 20 serves the same items
    only = algorithm(sequence_file(tmp_path), supervised_fraction=1.0, oversampling="repeat").prepare(Toy())
    assert sorted(only[v]["index"] for v in range(len(only))) == [0, 2, 5, 7]


def test_oversampled_batches_go_through_the_base_getitems(tmp_path):
    """DataLoader asks the dataset for __getitems__: the wrapper must map its positions, not pass the base's
    method through (a folder dataset would be asked for positions past its end)."""

    class Batched(Toy):
        def __getitems__(self, rows):
            assert all(0 <= r < len(self) for r in rows), rows
            return [self[r] for r in rows]

    data = algorithm(sequence_file(tmp_path), supervised_fraction=0.5, oversampling="repeat").prepare(Batched())
    assert len(data) == 16 > len(data.base)
    got = [item["index"] for item in data.__getitems__(list(range(16)))]
    assert got == [data[v]["index"] for v in range(16)]
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=16)))
    assert batch["index"].tolist() == got
    with pytest.raises(AttributeError):
        data.__len_hint__  # dunder names are never the base's


def test_fixed_share_puts_exactly_round_f_b_supervised_images_in_every_batch(tmp_path):
    """The default oversampling, as the official trainer's --fixed_attention_prop: a count per batch, not an
    expectation; a pure function of seed and iteration (resumes exactly); rank slices make up the batch."""
    supervised = (0, 2, 5, 7)
    data = algorithm(sequence_file(tmp_path), supervised_fraction=0.25).prepare(Toy())  # 4 supervised of 12
    assert isinstance(data, FixedShareDataset) and len(data) == 12 and data.name == "toy" and data[5]["index"] == 5
    assert data.per_batch(6) == 2 and data.per_batch(2) == 1 and data.per_batch(1) == 1
    batches = list(data.batch_sampler(6, seed=3, start=0, end=30))
    assert all(sum(i in supervised for i in b) == 2 and len(b) == 6 and len(set(b)) == 6 for b in batches)
    served = [i for b in batches for i in b if i in supervised]
    assert all(served.count(i) == 15 for i in supervised)  # 60 supervised slots over 4 images: whole shuffles
    assert list(data.batch_sampler(6, seed=3, start=12, end=30)) == batches[12:]
    assert list(data.batch_sampler(6, seed=4, start=0, end=30)) != batches
    halves = [list(data.batch_sampler(6, seed=3, start=0, end=30, rank=r, world_size=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*halves)] == batches
    only = algorithm(sequence_file(tmp_path), supervised_fraction=1.0).prepare(Toy())
    assert all(set(b) <= set(supervised) for b in only.batch_sampler(4, seed=0, start=0, end=5))
    with pytest.raises(ValueError, match="2 of 6 per batch from 0 chosen"):
        FixedShareBatches(12, torch.tensor([], dtype=torch.long), 6, 2, 0, 0, 1)
    with pytest.raises(ValueError, match="oversampling: expected 'fixed' or 'repeat', found 'often'"):
        algorithm(sequence_file(tmp_path), oversampling="often")


def test_the_engine_trains_on_the_fixed_share_batches(tmp_path):
    from foveal.training import TrainConfig, fit

    alg = algorithm(sequence_file(tmp_path), supervised_fraction=0.5)
    data = alg.prepare(Toy())
    seen = []
    original = alg.loss

    def spy(model, b):
        seen.append(b["index"].tolist())
        return original(model, b)

    alg.loss = spy
    config = TrainConfig(iterations=4, batch_size=4, lr=1e-3, val_every=4, device="cpu", tensorboard=False, seed=1)
    fit(grid_model(), alg, data, Toy(), config, tmp_path / "run")
    assert seen == list(data.batch_sampler(4, seed=1, start=0, end=4))
    assert all(sum(i in (0, 2, 5, 7) for i in b) == 2 for b in seen)
