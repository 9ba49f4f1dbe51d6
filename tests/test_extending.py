"""Extending foveal from outside the package: a dataset, a glimpse model, a training algorithm and a policy
of one's own, each registered the one way there is (``@<REGISTRY>.register(name)`` where it is defined, its
docstring the summary ``foveal list`` shows) and trained through the normal run function, with no foveal
file edited.

The user's code lives in a module of its own (written to a temporary folder) and runs in a fresh process,
so its registrations do not leak into the registries that other tests loop over.
"""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

PLUGIN = textwrap.dedent('''
    """A user's extension of foveal: one file, imported before the run."""
    from dataclasses import dataclass

    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.distributions import Normal

    from foveal.data import DATASETS, FovealDataset
    from foveal.models import MODELS, PolicyState, Rollout
    from foveal.policies import POLICIES, make_policy
    from foveal.retina import extract_glimpses
    from foveal.training import LossOutput, PolicyEvaluation
    from foveal.training.algorithms import ALGORITHMS
    from foveal.training.base import EvaluationSettings

    CORNERS = torch.tensor([[-0.5, -0.5], [0.5, 0.5], [-0.5, 0.5]])


    class Bars(FovealDataset):
        """A vertical (label 0) or horizontal (label 1) bar on a 16x16 image."""

        def __init__(self, split):
            self.name, self.split, self.num_classes = "bars", split, 2
            self.image_shape, self.class_names = (1, 16, 16), ["vertical", "horizontal"]
            self.labels = np.arange({"train": 64}.get(split, 32)) % 2

        def load(self, i):
            image, k = torch.zeros(1, 16, 16), 2 + 3 * (i // 2 % 4)
            if self.labels[i] == 0:
                image[0, :, k] = 1
            else:
                image[0, k, :] = 1
            return image


    @DATASETS.register("bars")
    def bars(split, *, root=None, seed=0):
        """Vertical or horizontal bars on 16x16 images (64 training images, 32 val / test)."""
        return Bars(split)


    @dataclass(frozen=True)
    class PatchAverageConfig:
        in_channels: int
        num_classes: int
        image_size: tuple
        glimpse_size: int = 8
        num_scales: int = 1
        scale_factor: int = 2


    class PatchAverage(nn.Module):
        """Classifies the mean of per-glimpse logits; a fixed Gaussian location policy."""

        def __init__(self, config):
            super().__init__()
            self.config = config
            self.head = nn.Linear(config.in_channels * config.glimpse_size ** 2, config.num_classes)
            self.where = nn.Parameter(torch.zeros(2))

        def rollout(self, images, num_glimpses, *, policy=None, forced_locations=None):
            B = images.shape[0]
            locations, log_probs, logits, total = [], [], [], 0
            for t in range(num_glimpses):
                dist = Normal(self.where.expand(B, 2), 0.3)
                seen = torch.stack(locations, 1) if locations else images.new_zeros(B, 0, 2)
                if forced_locations is not None:
                    where = forced_locations[:, t]
                elif policy is None:
                    where = dist.sample().clamp(-1, 1)
                else:
                    where = policy(PolicyState(t, None, seen, dist, None), images)
                locations.append(where)
                log_probs.append(dist.log_prob(where).sum(-1))
                glimpse = extract_glimpses(images, where, self.config.glimpse_size)  # [B, 1, C, g, g]
                total = total + self.head(glimpse.flatten(1))
                logits.append(total / (t + 1))
            return Rollout(locations=torch.stack(locations, 1), log_prob=torch.stack(log_probs, 1),
                           logits=torch.stack(logits, 1), baseline=images.new_zeros(B, num_glimpses))


    @MODELS.register("patch-average", kind="glimpse")
    def patch_average(**config):
        """Classifies the mean of per-glimpse logits."""
        return PatchAverage(PatchAverageConfig(**config))


    @POLICIES.register("corners")
    def corners(*, model=None, grid=None):
        """Three fixed places in turn."""
        return lambda state, images: CORNERS[state.t % 3].to(images).expand(images.shape[0], 2)


    @dataclass(frozen=True)
    class CornerCEConfig(EvaluationSettings):  # num_glimpses, eval_policy, test_samples: declared and checked there
        num_glimpses: int = 3
        eval_policy: str = "corners"


    @ALGORITHMS.register("corner-ce", config=CornerCEConfig)
    class CornerCE(PolicyEvaluation):
        """Cross-entropy of the rollout under the corners policy; tested by the shared PolicyEvaluation."""

        def __init__(self, config):
            self.config = config

        def loss(self, model, batch):
            ro = model.rollout(batch["image"], self.config.num_glimpses, policy=make_policy("corners"))
            ce = F.cross_entropy(ro.logits[:, -1], batch["label"])
            return LossOutput(ce, {"ce": ce.item()})
''')

# the foveal under test where PYTHONPATH names it (a worktree), not the one installed in the environment
PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}

RUN = textwrap.dedent('''
    import json, sys
    sys.path.insert(0, sys.argv[1])
    import my_extension  # noqa: F401  (registers bars, patch-average, corners, corner-ce)
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
    main(["list"])
    print(json.dumps({"results": results}))
''')


def test_a_dataset_model_algorithm_and_policy_from_outside_train_through_the_run(tmp_path):
    (tmp_path / "my_extension.py").write_text(PLUGIN)
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", RUN, str(tmp_path), str(run)], capture_output=True, text=True,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", **PYTHONPATH}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    *listing, last = done.stdout.strip().splitlines()
    results = json.loads(last)["results"]
    for name, summary in [("bars", "Vertical or horizontal bars on 16x16 images"),
                          ("patch-average", "Classifies the mean of per-glimpse logits."),
                          ("corner-ce", "Cross-entropy of the rollout under the corners policy"),
                          ("corners", "Three fixed places in turn.")]:  # foveal list shows each with its summary
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
