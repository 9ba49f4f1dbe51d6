"""Extending foveal from outside the package: a dataset, a glimpse model, a training algorithm, a policy and a
sequence maker of one's own, each registered the one way there is (``@<REGISTRY>.register(name)`` where it is
defined, its docstring the summary ``foveal list`` shows), trained through the normal run function, with no
foveal file edited. The code is the worked example of ``docs/architecture.md``, read from the page.

The user's code lives in a module of its own (written to a temporary folder) and runs in a fresh process,
so its registrations do not leak into the registries that other tests loop over.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

PAGE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def worked_example(page: Path = PAGE) -> str:
    """The Python block of the page's "A worked example" section: the test runs the code the page shows."""
    text = page.read_text()
    section = text[text.index("## A worked example"):]
    return section[section.index("```python\n") + len("```python\n"):section.index("\n```", section.index("```python"))]


PLUGIN = worked_example()

# the foveal under test where PYTHONPATH names it (a worktree), not the one installed in the environment
PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}

RUN = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import my_extension  # noqa: F401  (registers bars, patch-average, corners, corner-ce, first-cells)
    from foveal.cli import main
    from foveal.config import apply_overrides, load_config
    from foveal.recipes.run import train_run

    cfg = apply_overrides(load_config("demo"), [
        "train.iterations=20", "train.val_every=10", "train.val_batches=1", "train.batch_size=32",
        "train.tensorboard=false", "evaluate.examples=4", "evaluate.figures=false"])
    cfg["data"] = {"name": "translated-bars", "canvas": 24, "seed": 0}  # every dataset can be placed
    cfg["model"] = {"name": "patch-average", "glimpse_size": 8}
    cfg["algorithm"] = {"name": "corner-ce", "num_glimpses": 3}
    results = train_run(cfg, sys.argv[2])
    from foveal.data import build_dataset
    from foveal.retina import LocationGrid
    from foveal.sequences import MAKERS, Target
    test = build_dataset("bars", "test")
    seqs = MAKERS.build("first-cells", Target(test, [0, 1, 2], 2, LocationGrid.from_stride((16, 16), 8, 4)))
    main(["list"])
    print(json.dumps({"results": results, "corners": seqs.corners.tolist(), "method": seqs.method}))
''')


def test_a_dataset_model_algorithm_and_policy_from_outside_train_through_the_run(tmp_path):
    (tmp_path / "my_extension.py").write_text(PLUGIN)
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path), str(run)], capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **PYTHONPATH}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    *listing, last = done.stdout.strip().splitlines()
    out = json.loads(last)
    results = out["results"]
    for name, summary in [("bars", "Vertical or horizontal bars on 16x16 images"),
                          ("patch-average", "Classifies the mean of per-glimpse logits."),
                          ("corner-ce", "Cross-entropy of the rollout under the corners policy"),
                          ("corners", "Three fixed places in turn."),
                          ("first-cells", "The grid's first T cells, in order")]:  # foveal list shows each
        assert any(line.split()[:1] == [name] and summary in line for line in listing), (name, listing)
    assert results["dataset"] == "translated-bars"
    assert results["model"] == "patch-average" and results["algorithm"] == "corner-ce"
    assert results["training"]["iterations"] == 20 and results["num_glimpses"] == 3
    assert results["eval_policy"] == "corners" and 0 <= results["test_accuracy"] <= 1
    assert results["test_accuracy"] == results["accuracy_per_glimpse"][-1]
    # the glimpse record holds where the user's policy looked: its three places, in turn, on every image
    record = np.load(run / "records" / "glimpses_test.npz")
    assert np.allclose(record["locations"], [[[-0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]]])
    assert (run / "checkpoints" / "best.safetensors").exists()
    # the maker: the 3x3 grid of 8 px cells every 4 px on 16x16 images, its first two cells on every image
    assert out["method"] == "first-cells" and out["corners"] == [[[0, 0], [0, 4]]] * 3
