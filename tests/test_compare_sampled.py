"""``foveal compare``'s sampled evaluation: every finished run's best checkpoint also tested with sampled
locations, M rollouts per test image (``evaluate_repeats``), into ``runs/<method>/seed-<s>/sampled/``, and
reported beside the greedy test accuracy; a run finished before gets it on the next call without
training again; ``evaluate_repeats: 0`` leaves it out."""

import csv
import json
import shutil

import pytest
import yaml

from foveal.cli import main
from foveal.recipes.compare.config import load_compare_config, plan_runs
from foveal.recipes.compare.steps import plan_steps
from squares import register_squares  # tests/squares.py

RUN = register_squares("compare-sampled-toy")
METHODS = [{"name": "RAM", "kind": "ram"}, {"name": "PS-NOGS", "kind": "ps", "sequences": "nogs"}]
RUNS = ("ram", "ps-nogs")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, one_thread):
    """A tiny comparison (RAM, PS-NOGS on stand-in sequences, seed 0) run with the default M = 5."""
    root = tmp_path_factory.mktemp("compare-sampled")
    config = root / "compare.yaml"
    config.write_text(yaml.safe_dump({"run": RUN, "seeds": [0], "methods": METHODS,
                                      "inputs": {"stand_ins": True, "num_sequences": 8}}))
    out = root / "cmp"
    assert main(["compare", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    return config, out


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def files(folder):
    """Every file under ``folder`` with its bytes and modification time."""
    return {p.relative_to(folder): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_every_run_gets_a_sampled_evaluation_reported_beside_the_greedy_one(finished):
    config, out = finished
    summary = json.loads((out / "summary.json").read_text())
    assert summary["evaluate_repeats"] == 5
    runs = {r["method"]: r for r in read_csv(out / "runs.csv")}
    means = {r["method"]: r for r in read_csv(out / "table.csv")}
    for method, folder in zip(("RAM", "PS-NOGS"), RUNS):
        greedy = json.loads((out / "runs" / folder / "seed-0" / "results.json").read_text())
        sampled = json.loads((out / "runs" / folder / "seed-0" / "sampled" / "results.json").read_text())
        assert (greedy["eval_policy"], greedy["repeats"]) == ("greedy", 1)
        assert (sampled["eval_policy"], sampled["repeats"], sampled["num_images"]) == ("sample", 5, 16)
        assert sampled["checkpoint"] == str(out / "runs" / folder / "seed-0" / "checkpoints" / "best")
        assert (out / "runs" / folder / "seed-0" / "sampled" / "records" / "glimpses_test.npz").exists()
        assert float(runs[method]["sampled_test_accuracy"]) == sampled["test_accuracy"]
        assert float(runs[method]["test_accuracy"]) == greedy["test_accuracy"]
        assert float(means[method]["sampled_test_accuracy_mean"]) == sampled["test_accuracy"]
        entry = next(e for e in summary["methods"] if e["method"] == method)["sampled_test_accuracy"]
        assert (entry["mean"], entry["n"]) == (sampled["test_accuracy"], 1)
    table = (out / "table.md").read_text()
    assert "| test accuracy, greedy (%) | test accuracy, sampled (M=5) (%) | it/s |" in table
    assert "greedy: the mode of the location policy (the mean location, or the most probable cell" in table
    assert "every test image rolled out M = 5 times and every rollout scored, as the official" in table
    sampled_ram = json.loads((out / "runs" / "ram" / "seed-0" / "sampled" / "results.json").read_text())
    assert f"| {100 * sampled_ram['test_accuracy']:,.1f} | " in next(line for line in table.splitlines()
                                                                    if line.startswith("| RAM |"))


def test_a_run_finished_without_it_gets_it_without_training_again(finished, tmp_path, capfd):
    from foveal.recipes.run import evaluate_run

    config, before = finished
    out = tmp_path / "cmp"
    shutil.copytree(before, out)
    for folder in RUNS:  # runs finished before sampled evaluation existed
        shutil.rmtree(out / "runs" / folder / "seed-0" / "sampled")
    kept = {folder: files(out / "runs" / folder / "seed-0") for folder in RUNS}
    capfd.readouterr()
    assert main(["compare", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    err = capfd.readouterr().err
    assert err.count("finished already") == 2 and "training" not in err
    assert "evaluating RAM seed 0 (sampled evaluation, M=5) in " in err
    for folder in RUNS:
        now = files(out / "runs" / folder / "seed-0")
        assert {k: v for k, v in now.items() if k.parts[0] != "sampled"} == kept[folder]  # checkpoints, results kept
        again = json.loads((out / "runs" / folder / "seed-0" / "sampled" / "results.json").read_text())
        first = json.loads((before / "runs" / folder / "seed-0" / "sampled" / "results.json").read_text())
        assert again["test_accuracy"] == first["test_accuracy"]  # seeded: the same rollouts
    # Once there, a call changes nothing; another M is evaluated again; M = 1 is one sampled evaluate_run.
    sampled = files(out / "runs" / "ram" / "seed-0" / "sampled")
    assert main(["compare", "--config", str(config), "--out", str(out), "--quiet"]) == 0
    assert "evaluating" not in capfd.readouterr().err and files(out / "runs" / "ram" / "seed-0" / "sampled") == sampled
    assert main(["compare", "--config", str(config), "--out", str(out), "--quiet", "evaluate_repeats=1"]) == 0
    assert capfd.readouterr().err.count("(sampled evaluation, M=1)") == 4  # evaluating / finished, two runs
    direct = evaluate_run(out / "runs" / "ram" / "seed-0" / "checkpoints" / "best", tmp_path / "direct",
                          overrides={"eval_policy": "sample"}, repeats=1)
    ram = {r["method"]: r for r in read_csv(out / "runs.csv")}["RAM"]
    assert float(ram["sampled_test_accuracy"]) == direct["test_accuracy"]
    assert "test accuracy, sampled (M=1) (%)" in (out / "table.md").read_text()
    assert kept["ram"] == {k: v for k, v in files(out / "runs" / "ram" / "seed-0").items() if k.parts[0] != "sampled"}


def test_evaluate_repeats_0_leaves_it_out(finished, tmp_path, capfd):
    config, before = finished
    cfg = load_compare_config(config, ("evaluate_repeats=0",))
    assert cfg.evaluate_repeats == 0
    assert not any(s.name.endswith("-sampled") for s in plan_steps(cfg, plan_runs(cfg, tmp_path)))
    steps = plan_steps(load_compare_config(config), plan_runs(cfg, tmp_path))
    assert [(s.name, s.after) for s in steps if s.repeats] == [("ram-seed-0-sampled", ("ram-seed-0",)),
                                                             ("ps-nogs-seed-0-sampled", ("ps-nogs-seed-0",))]
    out = tmp_path / "cmp"
    shutil.copytree(before, out)
    for folder in RUNS:
        shutil.rmtree(out / "runs" / folder / "seed-0" / "sampled")
    capfd.readouterr()
    assert main(["compare", "--config", str(config), "--out", str(out), "--quiet", "evaluate_repeats=0"]) == 0
    assert "evaluating" not in capfd.readouterr().err
    assert not any((out / "runs" / folder / "seed-0" / "sampled").exists() for folder in RUNS)
    table = (out / "table.md").read_text()
    assert "test accuracy, sampled" not in table and "M = " not in table and "| test accuracy (%) | it/s |" in table
    assert "sampled_test_accuracy" not in (out / "runs.csv").read_text() + (out / "table.csv").read_text()
    assert "sampled_test_accuracy" not in json.dumps(json.loads((out / "summary.json").read_text())["methods"])
    with pytest.raises(ValueError, match="evaluate_repeats: expected a non-negative integer .* found -1"):
        load_compare_config(config, ("evaluate_repeats=-1",))


def test_the_estimate_counts_the_sampled_evaluation(finished):
    from foveal.recipes.compare.estimate import _total

    config, _ = finished
    for repeats, sampled_s in ((5, 2.0), (0, 0.0)):
        cfg = load_compare_config(config, (f"evaluate_repeats={repeats}",))
        est = _total(cfg, {"RAM": 2.0, "PS-NOGS": 3.0}, 1.0, 0.0, 3, sampled_s)
        per_run = {m["method"]: m["seconds_per_run"] for m in est["methods"]}
        assert per_run == {"RAM": 6 / 2.0 + 1.0 + sampled_s, "PS-NOGS": 6 / 3.0 + 1.0 + sampled_s}
        assert (est["sampled_evaluation_s"], est["evaluate_repeats"]) == (sampled_s, repeats)


def test_more_iterations_continue_every_finished_run_as_one_longer_run(tmp_path, capfd, one_thread):
    """The same comparison with more ``train.iterations`` (constant learning rate) continues each finished
    run from its last checkpoint to the same metrics and weights as a run trained that long straight away,
    and evaluates it again, sampled evaluation included; the shorter config's report then counts it partial."""
    config = tmp_path / "compare.yaml"
    config.write_text(yaml.safe_dump({"run": RUN, "run_overrides": ["train.lr_schedule=constant"], "seeds": [0],
                                      "methods": METHODS, "inputs": {"stand_ins": True, "num_sequences": 8},
                                      "evaluate_repeats": 2}))
    short, straight = tmp_path / "short", tmp_path / "straight"
    assert main(["compare", "--config", str(config), "--out", str(short), "--quiet"]) == 0
    assert main(["compare", "--config", str(config), "--out", str(straight), "--quiet", "train.iterations=12"]) == 0
    capfd.readouterr()
    assert main(["compare", "--config", str(config), "--out", str(short), "--quiet", "train.iterations=12"]) == 0
    err = capfd.readouterr().err
    assert "finished already" not in err and err.count("(sampled evaluation, M=2) in") == 2
    for folder in RUNS:
        a, b = (out / "runs" / folder / "seed-0" for out in (short, straight))
        # validation the same (the train lines are means over each logging window, which the stop at 6 cut)
        continued, once = ([line for line in (d / "metrics.csv").read_text().splitlines() if ",val," in line]
                           for d in (a, b))
        assert continued == once and any(line.startswith("12,val,") for line in once), folder
        assert (a / "checkpoints" / "last.safetensors").read_bytes() == (b / "checkpoints" / "last.safetensors").read_bytes()
        for name in ("results.json", "sampled/results.json"):  # greedy and sampled test of the longer run
            got, want = (json.loads((d / name).read_text()) for d in (a, b))
            assert (got["test_accuracy"], got["accuracy_per_glimpse"], got["repeats"]) == \
                (want["test_accuracy"], want["accuracy_per_glimpse"], want["repeats"]), (folder, name)
        assert json.loads((a / "results.json").read_text())["training"]["iterations"] == 12
    rows = {r["method"]: r for r in read_csv(short / "runs.csv")}
    assert rows["RAM"]["status"] == "finished" and rows["RAM"]["iterations"] == "12"
    # Again at 12: nothing to do. The 6-iteration config's report: the runs are of another length.
    assert main(["compare", "--config", str(config), "--out", str(short), "--quiet", "train.iterations=12"]) == 0
    assert capfd.readouterr().err.count("finished already") == 2
    assert main(["compare", "--config", str(config), "--out", str(short), "--quiet", "--report-only"]) == 0
    rows = {r["method"]: r for r in read_csv(short / "runs.csv")}
    assert rows["RAM"]["status"] == "partial" and rows["RAM"]["test_accuracy"] == ""
    assert rows["RAM"]["sampled_test_accuracy"] == ""
