"""``foveal compare`` end to end on a tiny registered dataset: every method trains, the report and figures
are written, a second call resumes instead of retraining, inputs are checked before training, and the
time estimate runs."""

import csv
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
import yaml

from foveal.checkpoint import save_checkpoint
from foveal.cli import main
from foveal.models import create_model, model_spec
from foveal.recipes.compare.config import load_compare_config, plan_runs, slug
from foveal.recipes.compare.convergence import run_convergence
from foveal.retina import LocationGrid
from foveal.sequences import GlimpseSequences, salient_cells
from squares import SIZE, register_squares  # tests/squares.py


RUN = register_squares("compare-toy")
METHODS = [{"name": "RAM", "kind": "ram"}, {"name": "RAM+", "kind": "ram+"},
           {"name": "WSRAM", "kind": "wsram", "algorithm": {"samples": 2}},
           {"name": "PS-RAM", "kind": "ps", "sequences": "ps-ram"}, {"name": "PS-NOGS", "kind": "ps", "sequences": "nogs"},
           {"name": "PS-HGS", "kind": "ps", "sequences": "hgs"}]


@pytest.fixture()
def setup(tmp_path):
    grid = LocationGrid.from_stride((SIZE, SIZE), 4, 4)
    cells = torch.randint(len(grid), (12, 2), generator=torch.Generator().manual_seed(0))
    GlimpseSequences("compare-toy", "train", (SIZE, SIZE), 4, torch.arange(0, 48, 4), grid.corners()[cells], grid=grid,
                     method="nogs").save(tmp_path / "nogs")
    posterior = create_model("posterior-cnn", in_channels=1, num_classes=4, image_size=(SIZE, SIZE), widths=(4,),
                             strides=(1,))
    save_checkpoint(tmp_path / "posterior", model=posterior, info={"config": {}, "model": model_spec(posterior)})
    config = {"run": RUN, "seeds": [0, 1], "methods": METHODS,
              "inputs": {"nogs": str(tmp_path / "nogs"), "posterior": str(tmp_path / "posterior"), "num_sequences": 8,
                         "pretrain_iterations": 3},
              "quick": {"seeds": [0]}}
    path = tmp_path / "compare.yaml"
    path.write_text(yaml.safe_dump(config))
    return tmp_path, path


def test_compare_trains_every_method_reports_and_resumes(setup, capsys, monkeypatch):
    tmp, config = setup
    out = tmp / "cmp"
    assert main(["compare", "--config", str(config), "--out", str(out), "--quick", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "skipping PS-HGS: no part annotations" in err
    for name in ("RAM", "RAM+", "WSRAM", "PS-RAM", "PS-NOGS"):
        assert (out / "runs" / slug(name) / "seed-0" / "results.json").exists(), name
    assert (out / "runs" / "ram-plus" / "seed-0" / "pretrain" / "results.json").exists()
    ws = json.loads((out / "runs" / "wsram" / "seed-0" / "results.json").read_text())
    assert ws["model"] == "ram-grid-ws" and ws["algorithm"] == "wake-sleep"
    ps = yaml.safe_load((out / "runs" / "ps-ram" / "seed-0" / "config.yaml").read_text())
    assert ps["algorithm"]["name"] == "partial-supervision" and "ps-ram-seed0-n8" in ps["algorithm"]["sequences"]
    seqs = GlimpseSequences.load(ps["algorithm"]["sequences"])
    assert seqs.method == "ps-ram" and seqs.indices.tolist() == list(range(0, 32, 4))  # NOGS's first 8 images
    table = (out / "table.md").read_text()
    assert "| RAM | 1/1 |" in table and "PS-HGS | skipped" in table
    assert "## Against RAM: the paper's claim" in table and "\n| PS-NOGS | 1 | " in table
    with open(out / "runs.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    conv = run_convergence(out / "runs" / "ps-nogs" / "seed-0" / "metrics.csv")
    assert int(rows["PS-NOGS"]["ce_iterations"]) == conv.ce_iterations
    assert int(rows["PS-NOGS"]["accuracy_iterations"]) == conv.accuracy_iterations
    # Iterations to RAM's best validation accuracy of the same seed: RAM's own, the first time it got there.
    ram_best = run_convergence(out / "runs" / "ram" / "seed-0" / "metrics.csv").best_accuracy
    for name in ("RAM", "PS-NOGS"):
        reach = run_convergence(out / "runs" / slug(name) / "seed-0" / "metrics.csv",
                                target_accuracy=ram_best).target_iterations
        assert rows[name]["ram_best_iterations"] == ("" if reach is None else str(reach)), name
    assert rows["RAM"]["ram_best_iterations"] != ""
    for fig in ("val_accuracy", "val_ce", "iterations_ce", "iterations_accuracy", "heatmaps", "heatmaps_ps-nogs",
                "policy_entropy", "sequence_nll"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 1000, fig
    # Again: nothing is retrained; a run that lost its results.json is evaluated again from its checkpoints.
    (out / "runs" / "ram" / "seed-0" / "results.json").unlink()
    metrics_before = (out / "runs" / "ram" / "seed-0" / "metrics.csv").read_text()
    assert main(["compare", "--config", str(config), "--out", str(out), "--quick", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("finished already") == 5 and "training RAM seed 0" in err
    assert (out / "runs" / "ram" / "seed-0" / "metrics.csv").read_text() == metrics_before
    # A fixed accuracy target adds a column, from the same runs; the report does not retrain.
    assert main(["compare", "--config", str(config), "--out", str(out), "--quick", "--report-only",
                 "convergence.target_accuracy=0.05"]) == 0
    assert "| iterations to 5 % |" in (out / "table.md").read_text()
    with open(out / "runs.csv") as f:
        rows = {r["method"]: r for r in csv.DictReader(f)}
    reach = run_convergence(out / "runs" / "ram" / "seed-0" / "metrics.csv", target_accuracy=0.05).target_iterations
    assert rows["RAM"]["target_iterations"] == ("" if reach is None else str(reach))
    # A report of a part covers only the methods asked for; a name the config lacks is an error. Each file
    # is moved into place whole: the processes of one comparison each write the report as they finish.
    replace, moved = os.replace, []
    monkeypatch.setattr(os, "replace", lambda src, dst: (moved.append(os.path.basename(dst)), replace(src, dst)))
    assert main(["compare", "--config", str(config), "--out", str(out), "--quick", "--report-only",
                 "--methods", "RAM,PS-NOGS"]) == 0
    monkeypatch.undo()
    assert {"table.md", "table.csv", "runs.csv", "summary.json"} <= set(moved)
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]
    table = (out / "table.md").read_text()
    assert "| RAM | 1/1 |" in table and "| PS-NOGS | 1/1 |" in table and "WSRAM" not in table
    with open(out / "runs.csv") as f:
        assert [r["method"] for r in csv.DictReader(f)] == ["RAM", "PS-NOGS"]
    capsys.readouterr()
    assert main(["compare", "--config", str(config), "--out", str(out), "--quick", "--report-only", "--methods", "RAN"]) == 2
    assert "--methods: unknown method(s) ['RAN']; the config has ['RAM', 'RAM+'," in capsys.readouterr().err
    assert main(["compare", "--config", str(config), "--out", str(out), "--quick", "--report-only", "--seeds", "7"]) == 2
    assert "--seeds: seed(s) [7] are not in the config's seeds [0]" in capsys.readouterr().err
    assert main(["compare", "--config", str(config), "--out", str(out), "--quick", "--report-only", "--seeds", "x"]) == 2
    assert "--seeds: expected comma-separated integers, found 'x'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"convergence.target_accuracy: expected null or a fraction in \(0, 1\], found 5"):
        load_compare_config(config, ("convergence.target_accuracy=5",), quick=True)
    with pytest.raises(ValueError, match=r"convergence: unknown key\(s\) \['target'\]"):
        load_compare_config(config, ("convergence.target=0.5",), quick=True)
    with pytest.raises(ValueError, match="another config"):
        from foveal.recipes.compare.run import run_comparison

        run_comparison(load_compare_config(config, ("train.lr=0.5",), quick=True), out)


def test_inputs_are_checked_before_training(setup, tmp_path):
    _, config = setup
    other = LocationGrid.from_stride((SIZE, SIZE), 4, 6)
    GlimpseSequences("compare-toy", "train", (SIZE, SIZE), 4, torch.arange(3), other.corners()[:6].view(3, 2, 2),
                     grid=other).save(tmp_path / "off")
    cfg = load_compare_config(config, (f"inputs.nogs={tmp_path / 'off'}",))
    from foveal.recipes.compare.run import run_comparison

    with pytest.raises(ValueError, match="not cells of the model's grid"):
        run_comparison(cfg, tmp_path / "x")
    with pytest.raises(ValueError, match="inputs.posterior"):
        run_comparison(load_compare_config(config, ("inputs.posterior=null",)), tmp_path / "y")
    assert not (tmp_path / "x" / "runs").exists() and not (tmp_path / "y" / "runs").exists()
    # A refused start writes no compare.yaml, so the corrected command is not taken for another config.
    assert not (tmp_path / "y" / "compare.yaml").exists()
    # Only the methods to train are checked: RAM+ needs the posterior, RAM and WSRAM do not.
    no_posterior = load_compare_config(config, ("inputs.posterior=null",), quick=True)
    run_comparison(no_posterior, tmp_path / "y", methods=("RAM", "WSRAM"), stop_after=1)
    assert (tmp_path / "y" / "compare.yaml").exists() and (tmp_path / "y" / "runs" / "wsram" / "seed-0").is_dir()
    with pytest.raises(ValueError, match="inputs.posterior"):
        run_comparison(no_posterior, tmp_path / "y", methods=("RAM+",), stop_after=1)
    with pytest.raises(ValueError, match="override"):
        load_compare_config(config, ("nonsense=1",))
    tasks = plan_runs(load_compare_config(config), tmp_path / "z")
    assert [(t.method, t.seed, t.stage) for t in tasks[:3]] == [("RAM", 0, "train"), ("RAM+", 0, "pretrain"),
                                                               ("RAM+", 0, "train")]
    assert len(tasks) == 2 * 7 and tasks[2].init_from == tasks[1].run_dir / "checkpoints" / "last"


def test_estimate_times_each_method(setup, capsys):
    tmp, config = setup
    text = yaml.safe_load(config.read_text())
    text["methods"] = [METHODS[0], METHODS[1], METHODS[4]]
    config.write_text(yaml.safe_dump(text))
    assert main(["compare", "--config", str(config), "--out", str(tmp / "est"), "--quick", "--estimate", "4"]) == 0
    est = json.loads((tmp / "est" / "estimate.json").read_text())
    rates = {m["method"]: m["it_per_s"] for m in est["methods"]}
    assert set(rates) == {"RAM", "RAM+", "PS-NOGS"} and all(r > 0 for r in rates.values())
    assert rates["RAM+"] == rates["RAM"]  # RAM+'s second stage is RAM
    assert est["total_s"] > 0 and est["salience_s"] > 0 and "estimated total" in capsys.readouterr().out


def test_salient_and_random_supervision_use_the_nogs_images_and_grid(setup):
    """PS-SALIENT / PS-RANDOM: baseline sequences of exactly the supervised images, made before any run."""
    from foveal.recipes.compare.inputs import ComparisonInputs
    from squares import Squares

    tmp, config = setup
    text = yaml.safe_load(config.read_text())
    text["methods"] = [{"name": "PS-SALIENT", "kind": "ps", "sequences": "salient"},
                       {"name": "PS-RANDOM", "kind": "ps", "sequences": "random"}]
    config.write_text(yaml.safe_dump(text))
    cfg = load_compare_config(config, quick=True)
    out = tmp / "base"
    ComparisonInputs(cfg, out).preflight()
    grid = LocationGrid.from_stride((SIZE, SIZE), 4, 4)
    train = Squares("compare-toy", "train", 48)
    nogs_first = list(range(0, 32, 4))
    salient = GlimpseSequences.load(out / "inputs" / "salient-n8")
    assert salient.method == "salient" and salient.indices.tolist() == nogs_first
    images = torch.stack([train[i]["image"] for i in nogs_first])
    assert torch.equal(salient.corners, grid.corners()[salient_cells(images, grid, 2)])
    random = GlimpseSequences.load(out / "inputs" / "random-n8")
    assert random.method == "random" and random.indices.tolist() == nogs_first
    before = (out / "inputs" / "random-n8.json").stat().st_mtime_ns
    assert main(["compare", "--config", str(config), "--out", str(out), "--quick", "--quiet"]) == 0
    assert (out / "inputs" / "random-n8.json").stat().st_mtime_ns == before  # made once, reused
    for method, name in (("ps-salient", "salient-n8"), ("ps-random", "random-n8")):
        run = yaml.safe_load((out / "runs" / method / "seed-0" / "config.yaml").read_text())
        assert run["algorithm"]["name"] == "partial-supervision" and run["algorithm"]["sequences"].endswith(name)
        assert (out / "runs" / method / "seed-0" / "results.json").exists()


def test_interrupted_runs_resume_exactly(setup):
    """Oversampled partial supervision and wake-sleep, trained straight or killed and resumed: same metrics."""
    from foveal.recipes.compare.inputs import ComparisonInputs
    from foveal.recipes.compare.run import train_task

    tmp, config = setup
    text = yaml.safe_load(config.read_text())
    text["methods"] = [{"name": "PS-NOGS", "kind": "ps", "sequences": "nogs", "algorithm": {"supervised_fraction": 0.5}},
                       {"name": "WSRAM", "kind": "wsram", "algorithm": {"samples": 2}}]
    config.write_text(yaml.safe_dump(text))
    cfg = load_compare_config(config, quick=True)
    for out, chunks in ((tmp / "a", [None]), (tmp / "b", [2, 4, None])):  # 2: before the first checkpoint
        inputs = ComparisonInputs(cfg, out)
        for task in plan_runs(cfg, out):
            inputs.resolve(task)
            for stop in chunks:
                train_task(task, stop_after=stop)
    for method in ("ps-nogs", "wsram"):
        straight, resumed = ((tmp / k / "runs" / method / "seed-0" / "metrics.csv").read_text() for k in "ab")
        assert straight == resumed, method


def test_claim_table_pairs_seeds_against_ram_and_applies_the_papers_claim(setup):
    from foveal.recipes.compare.report import claim_table

    _, config = setup
    cfg = load_compare_config(config)  # RAM first, seeds 0 and 1, sampled evaluation (M = 5)

    def row(method, seed, ce, acc, test, sampled=None, status="finished", to_ram_best=None):
        return {"method": method, "seed": seed, "status": status, "ce_iterations": ce, "accuracy_iterations": acc,
                "test_accuracy": test, "sampled_test_accuracy": sampled, "ram_best_iterations": to_ram_best}

    rows = [row("RAM", 0, 1000, 800, 0.80, 0.79, to_ram_best=900), row("RAM", 1, 1200, 1000, 0.82, 0.80, to_ram_best=1100),
            row("PS-NOGS", 0, 200, 400, 0.796, 0.78, to_ram_best=500),  # 5.5x, -0.7 points; RAM's best: 2.0x
            row("PS-NOGS", 1, 200, 500, 0.81, 0.80, to_ram_best=500),
            row("PS-RAM", 0, 100, 100, 0.78), row("PS-RAM", 1, 100, 100, 0.80, to_ram_best=100),  # 11x, 2 points lower
            row("WSRAM", 0, 300, 300, 0.90, to_ram_best=300), row("WSRAM", 1, 999, 999, 0.10, status="partial")]
    table = claim_table(cfg, rows)
    assert "## Against RAM: the paper's claim" in table
    lines = {line.split(" | ")[0][2:]: line for line in table.splitlines() if line.startswith("| ") and "---" not in line}
    assert lines["PS-NOGS"] == ("| PS-NOGS | 2 | 5.50x | 2.00x | 2.00x | -0.7 ± 0.4 [-4.5, 3.1] "
                                "| -0.5 ± 0.7 [-6.9, 5.9] | **yes** |")  # t(0.975, 1 df) = 12.706
    # PS-RAM never reached RAM's best on seed 0: no speed-up at equal accuracy, and how many seeds did.
    assert lines["PS-RAM"] == "| PS-RAM | 2 | 11.00x | 9.00x | - (1/2) | -2.0 ± 0.0 [-2.0, -2.0] | - | no |"
    assert lines["WSRAM"] == "| WSRAM | 1 | 3.33x | 2.67x | 3.00x | 10.0 | - | no |"  # its partial seed 1 left out
    assert "RAM+" not in lines and "PS-HGS" not in lines  # no finished seeds
    assert claim_table(cfg, [r for r in rows if r["method"] != "RAM"]) == ""


def test_pairs_of_methods_are_compared_seed_by_seed(tmp_path):
    """foveal.recipes.compare.pairs (compare_targets.py --pairs): differences only on the seeds both methods
    finished, greedy and sampled each on the seeds that have them, with the Student-t interval over those seeds."""
    from foveal.recipes.compare.pairs import pairs_table, parse_pairs

    def run(name, greedy, sampled=None):
        folder = tmp_path / name
        (folder / "sampled").mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"test_accuracy": greedy}))
        if sampled is not None:
            (folder / "sampled" / "results.json").write_text(json.dumps({"test_accuracy": sampled}))
        return folder

    runs = {"A": {0: run("a0", 0.70, 0.60), 1: run("a1", 0.80, 0.70), 2: run("a2", 0.75, 0.65)},
            "B": {0: run("b0", 0.60, 0.50), 1: run("b1", 0.60), 2: run("b2", 0.70, 0.65)},
            "C": {0: run("c0", 0.50)}}
    table = pairs_table(runs, parse_pairs(["A:B", "C:A"], ["A", "B", "C"])).splitlines()
    assert table[0] == ("| pair | seed 0 | seed 1 | seed 2 | mean ± sd, greedy | 95 % interval | mean ± sd, sampled "
                        "| 95 % interval |")
    # greedy: 10, 20, 5 points (mean 11.7, sd 7.6, t(0.975, 2) = 4.303); sampled: 10 and 0 (seed 1 has none)
    assert table[2] == "| A - B | +10.0 / +10.0 | +20.0 / - | +5.0 / +0.0 | +11.7 ± 7.6 (3) | [-7.3, +30.6] | " \
                       "+5.0 ± 7.1 (2) | [-58.5, +68.5] |"
    assert table[3] == "| C - A | -20.0 / - | - | - | -20.0 (1) | - | - | - |"
    with pytest.raises(ValueError, match=r"--pairs: expected A:B with A and B among --methods \['A', 'B'\], found 'A-B'"):
        parse_pairs(["A-B"], ["A", "B"])
    (runs["C"][0] / "results.json").write_text(json.dumps({"test_accuracy": "n/a"}))
    with pytest.raises(ValueError, match="c0/results.json: test_accuracy: expected a number"):
        pairs_table(runs, [("C", "A")])


def test_policy_curves_undo_the_share_weighting_and_count_per_glimpse():
    from foveal.recipes.compare.report import policy_curves

    its = np.array([50, 100, 150])
    ram = policy_curves({"entropy": (its, np.array([12.0, 9.0, 6.0])), "ce": (its, np.ones(3))}, num_glimpses=3)
    assert list(ram) == ["entropy"]
    np.testing.assert_array_equal(ram["entropy"][1], [4.0, 3.0, 2.0])
    # Partial supervision: entropy weighted by the unsupervised share, the NLL by the supervised one; a
    # window without supervised images has no NLL point.
    ps = policy_curves({"entropy": (its, np.array([6.0, 4.5, 6.0])), "sequence_nll": (its, np.array([1.5, 0.0, 3.0])),
                        "supervised": (its, np.array([0.25, 0.0, 0.5]))}, num_glimpses=2)
    np.testing.assert_allclose(ps["entropy"][1], [4.0, 2.25, 6.0])
    np.testing.assert_array_equal(ps["sequence_nll"][0], [50, 150])
    np.testing.assert_allclose(ps["sequence_nll"][1], [3.0, 3.0])
    with pytest.raises(ValueError, match="'entropy' and 'supervised' are logged at different iterations"):
        policy_curves({"entropy": (its, np.ones(3)), "supervised": (its[:2], np.zeros(2))}, num_glimpses=1)


def test_wall_time_with_workers_follows_the_plan_and_its_dependencies():
    """Two seeds of RAM (10 s), PS-RAM (needs RAM of its seed, 4 s), RAM+ (needs the salience maps, 6 s; 5 s)."""
    from foveal.recipes.compare.estimate import wall_time

    cfg = load_compare_config("compare-cluttered-fashion-mnist", ("seeds=[0,1]",))
    cfg = dataclasses.replace(cfg, methods=tuple(m for m in cfg.methods if m.name in ("RAM", "PS-RAM", "RAM+")))
    est = {"salience_s": 5.0, "methods": [{"method": "RAM", "seconds_per_run": 10.0},
                                         {"method": "RAM+", "seconds_per_run": 6.0},
                                         {"method": "PS-RAM", "seconds_per_run": 4.0}]}
    assert wall_time(cfg, est, 1) == 5 + 2 * (10 + 6 + 4)  # everything one after the other
    # 2 workers: w0 RAM0 0-10; w1 salience 0-5, RAM+0 5-11; w0 PS-RAM0 10-14; w1 RAM1 11-21; w0 RAM+1 14-20;
    # w0 PS-RAM1 waits for RAM1: 21-25
    assert wall_time(cfg, est, 2) == 25
    with pytest.raises(ValueError, match="workers: expected at least 1, found 0"):
        wall_time(cfg, est, 0)


def test_a_run_settled_by_its_patience_counts_as_finished_only_under_the_same_patience():
    from foveal.recipes.compare.config import run_finished

    train = {"iterations": 30000, "patience": 5000}
    settled = {"training": {"iterations": 12300, "settled": True, "patience": 5000}}
    assert run_finished(settled, train)
    assert not run_finished(settled, {**train, "patience": 8000})  # a longer patience continues it
    assert not run_finished({"training": {"iterations": 12300, "settled": False, "patience": 5000}}, train)
    assert run_finished({"training": {"iterations": 30000, "settled": False, "patience": 5000}}, train)  # the cap
    assert not run_finished({"training": {"iterations": 10000}}, train)  # an older, shorter run: continued
    assert not run_finished({}, train)
