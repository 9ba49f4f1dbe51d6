"""The hindsight-label reference: the greedy search scored by the true label's cross-entropy on the true image.

Two small worlds:

* a linear posterior on 6x6 images (logits = W . seen pixels + V . mask) with a 3x3 grid of 2-pixel cells,
  against a brute force that builds every mask by hand and computes ``-log p(y | masked image)`` in float64;
* the exact Bayes world of tests/test_boed_epe.py with other images and priors, where the hand computation
  shows the two objectives disagree: the entropy finds where the posterior is surest, the label where it is
  right. Block values (cells 0, 1, 2, 3 row-major; cells 2 and 3 tell nothing):

      image  blocks     class  prior
      I1     0 0 0 0    0      0.05
      I2     0 1 0 0    1      0.65
      I3     1 0 0 0    1      0.10
      I4     1 1 0 0    0      0.20
"""

import json
import math
import re

import pytest
import torch

from foveal.boed.annotate import AnnotateConfig, annotate, load_posterior
from foveal.boed.completion import TrueImage
from foveal.boed.epe import (SearchConfig, cell_masks, expected_label_cross_entropy, greedy_sequence,
                             label_cross_entropy, search_step)
from foveal.checkpoint import save_checkpoint
from foveal.models import create_model, model_spec
from foveal.retina import LocationGrid
from foveal.sequences import MAKERS, GlimpseSequences, Target, sequence_paths
from toys import ToySplit, toy_config  # tests/toys.py

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# ------------------------------------------------------------------------------- a linear posterior
GRID6 = LocationGrid.from_stride((6, 6), 2, 2)  # 9 cells, corners (2 * (c // 3), 2 * (c % 3))
IMAGES6 = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(5))


class LinearPosterior:
    """Logits that depend on the seen pixels and on where they are: ``W . (image * mask) + V . mask``."""

    def __init__(self, K=3, multilabel=False, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.W, self.V = 3 * torch.randn(36, K, generator=g), torch.randn(36, K, generator=g)
        self.multilabel, self.calls = multilabel, 0

    def logits(self, images, masks):
        self.calls += 1
        return (images * masks).flatten(1) @ self.W + masks.flatten(1) @ self.V


def brute_force(post, image, label, seen):
    """``-log p(label | image seen through seen + [cell])`` for every cell, in float64, every mask by hand."""
    out = []
    for cell in range(9):
        mask = torch.zeros(6, 6, dtype=torch.float64)
        for c in seen + [cell]:
            r, col = 2 * (c // 3), 2 * (c % 3)
            mask[r:r + 2, col:col + 2] = 1
        z = ((image[0].double() * mask).flatten() @ post.W.double() + mask.flatten() @ post.V.double()).tolist()
        if post.multilabel:  # one Bernoulli per attribute: -log sigmoid(z) if 1, -log sigmoid(-z) if 0, summed
            out.append(sum(math.log1p(math.exp(-zk if yk else zk)) for zk, yk in zip(z, label.tolist())))
        else:
            top = max(z)
            out.append(top + math.log(sum(math.exp(v - top) for v in z)) - z[int(label)])
    return out


def argmin(values):
    return min(range(len(values)), key=lambda c: (round(values[c], 9), c))


@pytest.mark.parametrize("skip_seen", [False, True])
@pytest.mark.parametrize("multilabel", [False, True])
def test_label_objective_picks_the_brute_force_cell_at_every_step(multilabel, skip_seen):
    post = LinearPosterior(K=4 if multilabel else 3, multilabel=multilabel)
    differs = []
    for i, image in enumerate(IMAGES6):
        label = (torch.arange(4) + i) % 2 if multilabel else torch.tensor(i)
        # no first_location: the first cell is searched for too, by the same score with nothing else seen
        seq = greedy_sequence(image, post, TrueImage(image), GRID6, 3, n_completions=200, keep_maps=True,
                              batch_size=4, search=SearchConfig(skip_seen=skip_seen), label=label)
        chosen = []
        for t in range(3):
            truth = brute_force(post, image, label, chosen)
            if skip_seen:  # the cells do not overlap: a cell taken before holds nothing unseen
                truth = [math.inf if c in chosen else v for c, v in enumerate(truth)]
            assert seq.epe_maps[t].tolist() == pytest.approx(truth, abs=1e-4)
            assert int(seq.cells[t]) == argmin(truth)
            chosen.append(int(seq.cells[t]))
        entropy = greedy_sequence(image, post, TrueImage(image), GRID6, 3, n_completions=1,
                                  search=SearchConfig(skip_seen=skip_seen))
        differs.append(not torch.equal(entropy.cells, seq.cells))
    assert any(differs)  # the entropy on the same image, same sampler, takes other cells somewhere


def test_skip_seen_and_allowed_work_as_for_the_entropy():
    post, image, label = LinearPosterior(), IMAGES6[0], torch.tensor(2)
    observed = cell_masks(GRID6)[4]
    completions, weights = TrueImage(image).sample(image * observed, observed, 1)
    full = expected_label_cross_entropy(post, completions, weights, label, observed, GRID6, batch_size=2)
    assert full.tolist() == pytest.approx(brute_force(post, image, label, [4]), abs=1e-4)
    cell, skipped = search_step(post, completions, weights, observed, GRID6, SearchConfig(skip_seen=True), label=label)
    assert skipped[4] == math.inf and torch.equal(skipped[torch.arange(9) != 4], full[torch.arange(9) != 4])
    assert cell == argmin([v if c != 4 else math.inf for c, v in enumerate(full.tolist())])
    allowed = torch.tensor([True, False] * 4 + [True])
    some = expected_label_cross_entropy(post, completions, weights, label, observed, GRID6, allowed=allowed)
    assert torch.isinf(some[~allowed]).all() and torch.equal(some[allowed], full[allowed])


def test_a_label_that_does_not_fit_the_posterior_is_refused():
    logits = torch.zeros(2, 3)
    assert label_cross_entropy(logits, torch.tensor(1), False).tolist() == pytest.approx([math.log(3)] * 2)
    with pytest.raises(ValueError, match=r"label: expected a class index in \[0, 3\) \(the posterior's classes\), "
                                         r"found 3"):
        label_cross_entropy(logits, torch.tensor(3), False)
    with pytest.raises(ValueError, match=r"label: expected a class index \(a 0-dim integer tensor\) for a "
                                         r"categorical posterior, found torch.float32 of shape \(\)"):
        label_cross_entropy(logits, torch.tensor(1.0), False)
    with pytest.raises(ValueError, match=r"label: expected \[3\] 0/1 attributes for a multilabel posterior \(one "
                                         r"per logit\), found shape \(\)"):
        label_cross_entropy(logits, torch.tensor(1), True)
    with pytest.raises(ValueError, match=r"label: expected 0/1 attributes for a multilabel posterior, found values "
                                         r"\[-1, 1\]"):
        label_cross_entropy(logits, torch.tensor([1, -1, 1]), True)


# ------------------------------------------------------------------------------ the exact Bayes world
BLOCKS = torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.float32)
CLASSES = torch.tensor([0, 1, 1, 0])
PRIOR = torch.tensor([0.05, 0.65, 0.10, 0.20])
GRID = LocationGrid.from_stride((4, 4), 2, 2)
IMAGES = BLOCKS.view(4, 1, 2, 1, 2, 1).expand(4, 1, 2, 2, 2, 2).reshape(4, 1, 4, 4)


class ExactPosterior:
    multilabel = False

    def logits(self, images, masks):
        diff = (images[:, None] - IMAGES[None]).abs() * masks[:, None]  # [B, 4, 1, 4, 4]
        joint = (diff.flatten(2).sum(-1) == 0).float() * PRIOR  # [B, 4]: the world images consistent
        per_class = torch.stack([joint[:, CLASSES == k].sum(1) for k in (0, 1)], dim=1)
        return torch.log(per_class / per_class.sum(1, keepdim=True))


def H(p):
    return -p * math.log(p) - (1 - p) * math.log(1 - p)


def test_the_label_and_the_entropy_objectives_disagree_where_the_posterior_is_sure_and_wrong():
    # true image I1 (class 0). Seen at cell 0 it matches I2 too: class 0 has .05 / .70, the posterior is
    # sure (of the wrong class); at cell 1 it matches I3: class 0 has 1/3; at cells 2, 3 every image: .25
    entropy_hand = [H(0.05 / 0.70), H(1 / 3), H(0.25), H(0.25)]  # [0.259, 0.637, 0.562, 0.562]: cell 0
    label_hand = [-math.log(0.05 / 0.70), math.log(3), -math.log(0.25), -math.log(0.25)]  # [2.64, 1.10, 1.39, 1.39]
    by_entropy = greedy_sequence(IMAGES[0], ExactPosterior(), TrueImage(IMAGES[0]), GRID, 2, n_completions=1,
                                 keep_maps=True)
    by_label = greedy_sequence(IMAGES[0], ExactPosterior(), TrueImage(IMAGES[0]), GRID, 2, n_completions=1,
                               keep_maps=True, label=CLASSES[0])
    assert by_entropy.epe_maps[0].tolist() == pytest.approx(entropy_hand, abs=1e-6)
    assert by_label.epe_maps[0].tolist() == pytest.approx(label_hand, abs=1e-6)
    assert int(by_entropy.cells[0]) == 0 and int(by_label.cells[0]) == 1
    # a later step: after cell 1 (I1 or I3), cell 0 leaves I1 alone, right and sure: 0 nats
    assert int(by_label.cells[1]) == 0 and by_label.epe_maps[1, 0].item() == pytest.approx(0.0, abs=1e-6)


def test_the_first_cell_is_each_images_own():
    # I2 (class 1): cell 0 leaves I1, I2 (class 1 .65 / .70, 0.074 nats), cell 1 I2, I4 (.65 / .85, 0.268),
    # cells 2, 3 all (.75, 0.288); I1 (class 0) takes cell 1 (above)
    first = {}
    for i in (0, 1):
        seq = greedy_sequence(IMAGES[i], ExactPosterior(), TrueImage(IMAGES[i]), GRID, 1, n_completions=1,
                              keep_maps=True, label=CLASSES[i])
        first[i] = int(seq.cells[0])
    assert first == {0: 1, 1: 0}
    seq = greedy_sequence(IMAGES[1], ExactPosterior(), TrueImage(IMAGES[1]), GRID, 1, n_completions=1,
                          keep_maps=True, label=CLASSES[1])
    assert seq.epe_maps[0].tolist() == pytest.approx([-math.log(0.65 / 0.70), -math.log(0.65 / 0.85),
                                                      -math.log(0.75), -math.log(0.75)], abs=1e-6)


# ------------------------------------------------------------------------------------- the settings
def test_settings_name_the_field_expected_and_found(annotation_inputs):
    files = annotation_inputs
    cfg = toy_config(files, completions="hindsight", objective="label")
    assert cfg.method == "hindsight-label" and toy_config(files, completions="hindsight").objective == "entropy"
    assert toy_config(files, completions="hindsight", objective="label", method="mine").method == "mine"
    with pytest.raises(ValueError, match=r"AnnotateConfig.objective: 'label' scores a cell by the true label's "
                                         r"cross-entropy on the true image, so it needs completions='hindsight', "
                                         r"found completions='bank'"):
        toy_config(files, objective="label")
    with pytest.raises(ValueError, match=r"AnnotateConfig.objective: expected one of 'entropy', 'label', found 'x'"):
        toy_config(files, completions="hindsight", objective="x")
    with pytest.raises(ValueError, match=r"AnnotateConfig.screen_completions: expected None with objective='label' "
                                         r"\(the true image is the only completion: nothing to screen\), found 8"):
        toy_config(files, completions="hindsight", objective="label", screen_completions=8)
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("objective", "method")}  # made before the field
    assert AnnotateConfig.from_dict({**old, "method": "hindsight"}).objective == "entropy"


# ----------------------------------------------------------------------------------- the annotator
def read(prefix):
    json_path, st_path = sequence_paths(prefix)
    header = json.loads(json_path.read_text())
    header["provenance"].pop("timing")
    return header, st_path.read_bytes()


def test_annotation_with_the_label_objective_resumes_and_records_what_it_is(annotation_inputs, tmp_path):
    files, data = annotation_inputs, ToySplit()
    cfg = toy_config(files, completions="hindsight", objective="label", keep_maps=True)
    assert annotate(cfg, tmp_path / "a", dataset=data, stop_after=1) is None
    assert not (tmp_path / "a" / "first-glimpse.json").exists()  # no task-wide first glimpse is made
    path = annotate(cfg, tmp_path / "a", dataset=data)
    assert read(path) == read(annotate(cfg, tmp_path / "b", dataset=ToySplit()))  # resumed = uninterrupted
    seqs = GlimpseSequences.load(path, dataset=data)
    prov = seqs.provenance
    assert seqs.method == "hindsight-label" and prov["config"]["objective"] == "label"
    assert "TRUE LABEL" in prov["reference"] and "a reference, not a method" in prov["reference"]
    assert prov["first_glimpse"] is None and prov["timing"]["first_glimpse_seconds"] == 0.0
    summary = prov["completions"]
    assert summary["steps"] == [1, 2] and summary["distinct"] == summary["completion_ess"] == [1.0, 1.0]

    posterior, _ = load_posterior(cfg.posterior, torch.device("cpu"))
    grid = cfg.make_grid((8, 8))
    for row, i in enumerate(range(8)):  # each image as greedy_sequence scores it with its own label
        cells, maps = greedy_sequence(data.images[i], posterior, TrueImage(data.images[i]), grid, 2, n_completions=4,
                                      keep_maps=True, label=data[i]["label"])
        assert torch.equal(grid.corner_to_index(seqs.corners[row]), cells)
        assert seqs.epe_maps[row].flatten().tolist() == pytest.approx(maps.flatten().tolist(), abs=1e-6)
    assert len(set(grid.corner_to_index(seqs.corners[:, 0]).tolist())) > 1  # first cells differ by image

    local = GlimpseSequences.load(annotate(toy_config(files, completions="hindsight", objective="label",
                                                      local_updates=True), tmp_path / "local", dataset=ToySplit()))
    assert torch.equal(local.corners, seqs.corners)  # local updates: the same scores up to rounding

    with pytest.raises(ValueError, match=r"other settings; differing: .*config.objective: 'label' vs 'entropy'"):
        annotate(toy_config(files, completions="hindsight", keep_maps=True), tmp_path / "a", dataset=data)


def test_a_folder_made_before_the_objective_existed_resumes_as_entropy(annotation_inputs, tmp_path):
    files, data = annotation_inputs, ToySplit()
    cfg = toy_config(files, completions="hindsight")
    assert annotate(cfg, tmp_path, dataset=data, stop_after=1) is None
    record_path = tmp_path / "config.json"
    record = json.loads(record_path.read_text())
    del record["config"]["objective"]
    record_path.write_text(json.dumps(record))
    assert GlimpseSequences.load(annotate(cfg, tmp_path, dataset=data)).method == "hindsight"
    with pytest.raises(ValueError, match=r"config.objective: 'entropy' vs 'label'"):
        annotate(toy_config(files, completions="hindsight", objective="label"), tmp_path, dataset=data)


def test_the_hindsight_label_maker(annotation_inputs, tmp_path):
    files = annotation_inputs
    settings = dict(n_completions=4, n_proposals=10, pca_components=4, chunk_size=3, seed=7)
    target = Target(ToySplit(), range(8), 2, LocationGrid.from_stride((8, 8), 4, 2))
    paths = {"posterior": str(files / "posterior"), "bank": str(files / "bank.npy")}
    made = MAKERS.build("hindsight-label", target, out_dir=tmp_path / "made", **paths, **settings)
    direct = annotate(toy_config(files, completions="hindsight", objective="label"), tmp_path / "direct",
                      dataset=ToySplit())
    assert made.method == "hindsight-label" and read(made.source) == read(direct)
    with pytest.raises(ValueError, match=r"hindsight-label: \['objective'\] are not settings"):
        MAKERS.build("hindsight-label", target, out_dir=tmp_path / "x", objective="entropy", **paths)


def test_cli_annotates_with_the_label_objective(tmp_path, capsys):
    from foveal.cli import main

    bank = tmp_path / "bank.npy"
    assert main(["build-bank", "mnist5k", "--split", "val", "--limit", "20", "--no-flips", "--out", str(bank),
                 "--quiet"]) == 0
    torch.manual_seed(3)
    net = create_model("posterior-cnn", in_channels=1, num_classes=10, image_size=(28, 28), widths=(4,), strides=(2,))
    save_checkpoint(tmp_path / "post", model=net, info={"model": model_spec(net)}, rng=False)
    command = ["annotate", "--dataset", "mnist5k", "--split", "test", "--posterior", str(tmp_path / "post"),
               "--bank", str(bank), "--count", "2", "--glimpse-size", "8", "--grid", "3", "--num-glimpses", "2",
               "--out", str(tmp_path / "run"), "--quiet", "completions=hindsight", "objective=label"]
    assert main(command) == 0
    seqs = GlimpseSequences.load(tmp_path / "run" / "sequences")
    assert seqs.method == "hindsight-label" and seqs.provenance["config"]["objective"] == "label"
    capsys.readouterr()
    assert main(["sequences", "info", str(tmp_path / "run" / "sequences")]) == 0
    assert re.search(r"method hindsight-label.*completions per step .*: t1 1/1\.0/1  t2 1/1\.0/1", capsys.readouterr()
                     .out, re.S)

    # the Ray path's pieces, its chunk tasks called here: no first glimpse to prepare, the same result
    from foveal.boed.annotate import finish, open_annotation, prepare
    from foveal.boed.annotate_ray import _OPEN, chunk_tasks

    cfg = AnnotateConfig.from_dict(seqs.provenance["config"])
    run = open_annotation(cfg, tmp_path / "ray")
    assert prepare(run) is None and not (tmp_path / "ray" / "first-glimpse.json").exists()
    for task in chunk_tasks(run, run.todo()):
        task.fn(*task.args, **task.kwargs)
    _OPEN.clear()
    assert read(finish(run))[1] == read(tmp_path / "run" / "sequences")[1]

    assert main([*command[:-5], "--out", str(tmp_path / "other"), "--quiet", "objective=label"]) == 2
    err = capsys.readouterr().err
    assert "AnnotateConfig.objective: 'label'" in err and "found completions='bank'" in err
    assert not (tmp_path / "other").exists()
