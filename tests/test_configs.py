"""Every built-in config builds: its model and algorithm exist and take its settings (a typo in a YAML
file fails here, not an hour into someone's run)."""

from types import SimpleNamespace

import pytest

from foveal.config import builtin_configs, load_config
from foveal.recipes.compare.config import load_compare_config
from foveal.recipes.experiment import build_algorithm_of, build_model, check_run_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

RUN_CONFIGS = [n for n in builtin_configs() if not n.startswith("compare-")]


def stand_in_data(data: dict) -> SimpleNamespace:
    """The shape and class count a config's dataset would have, without reading it."""
    name = data["name"]
    if name == "celeba-hq":
        size = int(data.get("image_size", 224))
        return SimpleNamespace(name=name, image_shape=(3, size, size), num_classes=2)
    size = int(data.get("canvas", 60)) if name.startswith(("cluttered-", "translated-")) else 28
    return SimpleNamespace(name=name, image_shape=(1, size, size), num_classes=10)


def test_the_built_in_configs_are_listed():
    assert {"demo", "ram-fashion-mnist", "compare-cluttered-fashion-mnist", "posterior-densenet121-celeba-hq"} <= set(
        builtin_configs())


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_config_builds_its_model_algorithm_and_training_settings(name):
    cfg = load_config(name)
    check_run_config(cfg)  # train: and evaluate: as the CLI checks them (unknown keys, types)
    build_algorithm_of(cfg)  # every setting of its annotated type
    model = build_model(cfg, stand_in_data(cfg["data"]))
    assert sum(p.numel() for p in model.parameters()) > 0


@pytest.mark.parametrize("name", [n for n in builtin_configs() if n.startswith("compare-")])
def test_compare_config_resolves_every_method(name):
    cfg = load_compare_config(name)
    assert cfg.methods and len(cfg.seeds) >= 3
    for method in cfg.methods:
        assert method.kind in ("ram", "ram+", "wsram", "ps")
    check_run_config(cfg.run)


def test_the_demo_is_a_setting_where_the_glimpse_locations_matter():
    """The demo once trained on centred 28x28 digits with location_std 0.05: a glimpse at the centre saw most of the
    digit at its 16 px scale, the reward hardly depended on where the model looked, and its glimpses drifted to the
    borders. Its digits must lie mostly outside what a centred glimpse sees at all scales but the coarsest, and its
    policy must explore whole pixels."""
    import torch

    from foveal.data import build_dataset

    cfg = load_config("demo")
    data, model = cfg["data"], cfg["model"]
    test = build_dataset(data["name"], "test", **{k: v for k, v in data.items() if k != "name"})
    H = test.image_shape[1]
    side = model["glimpse_size"] * 2 ** max(0, model["num_scales"] - 2)  # the finer scales' reach
    images = torch.stack([test[i]["image"][0] for i in range(40)])  # [40, H, W]
    lo = (H - side) // 2
    seen = images[:, lo:lo + side, lo:lo + side].sum((1, 2)) / images.sum((1, 2))  # [40]
    assert seen.median() < 0.5  # centred 28x28 digits with 8 and 16 px scales: 0.79
    assert model["location_std"] * H / 2 >= 3  # the policy's std in pixels (was 0.7)
