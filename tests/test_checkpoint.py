"""Checkpoints: exact round trips of weights, optimizer state and RNG; strict loading; no pickles."""

import json
import pickle
import random

import pytest
import torch
from safetensors import safe_open
from torch import nn

from foveal.checkpoint import load_checkpoint, read_checkpoint_info, save_checkpoint


class Net(nn.Module):
    def __init__(self, hidden: int = 8):
        super().__init__()
        self.fc1 = nn.Linear(4, hidden)
        self.norm = nn.BatchNorm1d(hidden)  # buffers, incl. an int64 counter
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


def trained(optimizer_name: str, steps: int = 3):
    torch.manual_seed(0)
    model = Net()
    optimizer = make_optimizer(optimizer_name, model)
    for _ in range(steps):
        step(model, optimizer)
    return model, optimizer


def make_optimizer(name: str, model: nn.Module):
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    return cls(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=1e-3)


def step(model, optimizer):
    x = torch.randn(6, 4)
    loss = model(x).square().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict):
            assert_same_state(a[k], b[k])
        else:
            assert a[k] == b[k] and type(a[k]) is type(b[k]), k


@pytest.mark.parametrize("optimizer_name", ["adam", "adamw", "sgd"])
def test_round_trip_weights_optimizer_and_next_step(tmp_path, optimizer_name):
    model, optimizer = trained(optimizer_name)
    save_checkpoint(tmp_path / "ck", model=model, optimizer=optimizer, iteration=3, info={"name": "net"},
                    metrics={"val/accuracy": 0.5})
    torch.manual_seed(1)
    model2 = Net()
    optimizer2 = make_optimizer(optimizer_name, model2)
    ckpt = load_checkpoint(tmp_path / "ck", model=model2, optimizer=optimizer2)
    assert ckpt.iteration == 3 and ckpt.info == {"name": "net"} and ckpt.metrics == {"val/accuracy": 0.5}
    assert_same_state(model.state_dict(), model2.state_dict())
    s1, s2 = optimizer.state_dict(), optimizer2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]  # betas stay a tuple
    for i in s1["state"]:
        assert_same_state(s1["state"][i], s2["state"][i])  # incl. Adam's tensor `step`
    # both continue identically
    torch.manual_seed(5)
    step(model, optimizer)
    torch.manual_seed(5)
    step(model2, optimizer2)
    assert_same_state(model.state_dict(), model2.state_dict())


def test_rng_states_restore_the_next_random_numbers(tmp_path):
    model = Net()
    torch.manual_seed(3)
    random.seed(3)
    random.gauss(0, 1)  # leaves a cached gauss_next in Python's state
    save_checkpoint(tmp_path / "ck", model=model, rng=True)
    expected = torch.rand(5), torch.randn(3), random.random(), random.gauss(0, 1)
    torch.manual_seed(99)
    random.seed(99)
    load_checkpoint(tmp_path / "ck", restore_rng=True)
    got = torch.rand(5), torch.randn(3), random.random(), random.gauss(0, 1)
    assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1]) and expected[2:] == got[2:]
    # loading without restore_rng leaves the RNG alone
    before = torch.get_rng_state()
    load_checkpoint(tmp_path / "ck")
    assert torch.equal(before, torch.get_rng_state())


def test_files_are_safetensors_and_json_only_no_pickle(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle-based serialisation used")

    for target, name in ((torch, "save"), (torch, "load"), (pickle, "dump"), (pickle, "dumps"), (pickle, "load"),
                         (pickle, "loads")):
        monkeypatch.setattr(target, name, forbidden)
    model, optimizer = trained("adam")
    save_checkpoint(tmp_path / "ck", model=model, optimizer=optimizer, iteration=7, info={"model": {"name": "net"}},
                    extra_tensors={"ema": torch.ones(2)}, extra_state={"best": (1, 0.5)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.json", "ck.safetensors"]  # no temp files left
    header = json.loads((tmp_path / "ck.json").read_text())
    assert header["iteration"] == 7 and header["info"] == {"model": {"name": "net"}}
    with safe_open(str(tmp_path / "ck.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "model.fc1.weight" in keys and "rng.torch" in keys and "extra.ema" in keys
    assert any(k.startswith("optim.") and k.endswith(".exp_avg") for k in keys)
    ckpt = load_checkpoint(tmp_path / "ck.json", model=Net(), optimizer=make_optimizer("adam", Net()))
    assert ckpt.extra_state == {"best": (1, 0.5)} and torch.equal(ckpt.extra_tensors["ema"], torch.ones(2))
    assert torch.equal(ckpt.model_state["fc2.bias"], model.fc2.bias.detach())


def test_suffixes_info_only_and_tied_weights(tmp_path):
    model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    model[1].weight = model[0].weight  # tied: shared storage in the state dict
    save_checkpoint(tmp_path / "ck.safetensors", model=model, rng=False, info={"a": [1, 2]})
    assert read_checkpoint_info(tmp_path / "ck") == {"a": [1, 2]}
    (tmp_path / "ck.safetensors").unlink()
    assert read_checkpoint_info(str(tmp_path / "ck.json")) == {"a": [1, 2]}  # JSON alone suffices


def test_strict_load_names_file_and_keys(tmp_path):
    save_checkpoint(tmp_path / "ck", model=Net(hidden=8))

    class Other(Net):
        def __init__(self):
            super().__init__(hidden=6)
            self.extra = nn.Linear(2, 2)

    with pytest.raises(ValueError) as err:
        load_checkpoint(tmp_path / "ck", model=Other())
    msg = str(err.value)
    assert "ck.safetensors" in msg
    assert "missing keys" in msg and "extra.weight" in msg and "extra.bias" in msg
    assert "fc1.weight: expected [6, 4] (model), found [8, 4] (checkpoint)" in msg

    del_model = Net()
    del del_model.norm
    del_model.norm = nn.Identity()
    with pytest.raises(ValueError, match=r"unexpected keys.*norm\.running_mean"):
        load_checkpoint(tmp_path / "ck", model=del_model)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        load_checkpoint(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        read_checkpoint_info(tmp_path / "nothing")
    save_checkpoint(tmp_path / "ck", model=Net())
    text = (tmp_path / "ck.json").read_text()
    (tmp_path / "ck.json").write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="ck.json: corrupt checkpoint JSON"):
        read_checkpoint_info(tmp_path / "ck")
    # tensors from another save than the JSON (a crash between the two renames) are detected
    save_checkpoint(tmp_path / "ck", model=Net())
    save_checkpoint(tmp_path / "other", model=Net())
    (tmp_path / "other.safetensors").replace(tmp_path / "ck.safetensors")
    with pytest.raises(ValueError, match="ck.safetensors: does not match ck.json"):
        load_checkpoint(tmp_path / "ck")
    (tmp_path / "ck.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="ck.safetensors"):
        load_checkpoint(tmp_path / "ck")


@pytest.mark.parametrize("renames_before_kill", [0, 1, 2])
def test_a_save_killed_at_any_point_leaves_a_checkpoint_that_loads(tmp_path, monkeypatch, renames_before_kill):
    """Ctrl-C or SIGKILL during a save: the old or the new checkpoint loads, never neither; the next save
    completes or discards what the killed one left."""
    import foveal.checkpoint as ck
    old, new = Net(), Net()
    with torch.no_grad():
        new.fc1.weight.add_(1.0)
    save_checkpoint(tmp_path / "last", model=old, iteration=1)
    real_replace, calls = ck.os.replace, []

    def replace(src, dst):
        if len(calls) == renames_before_kill:
            raise KeyboardInterrupt
        calls.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "last", model=new, iteration=2)
    monkeypatch.setattr(ck.os, "replace", real_replace)
    # renames: the pending tensors, then the JSON (the commit point), then the tensors into place
    committed = renames_before_kill >= 2
    loaded = Net()
    got = load_checkpoint(tmp_path / "last", model=loaded)
    assert got.iteration == (2 if committed else 1)
    assert_same_state(loaded.state_dict(), (new if committed else old).state_dict())
    assert (tmp_path / ".last.safetensors.pending").exists() == (renames_before_kill in (1, 2))
    # the next save starts from what the killed one left, and leaves only the checkpoint's two files
    save_checkpoint(tmp_path / "last", model=old, iteration=3)
    assert load_checkpoint(tmp_path / "last", model=loaded).iteration == 3
    assert_same_state(loaded.state_dict(), old.state_dict())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "last.safetensors"]


def test_loading_parts_the_checkpoint_lacks_is_an_error(tmp_path):
    save_checkpoint(tmp_path / "ck", model=Net(), rng=False)
    with pytest.raises(ValueError, match="no optimizer state"):
        load_checkpoint(tmp_path / "ck", optimizer=make_optimizer("adam", Net()))
    with pytest.raises(ValueError, match="no RNG state"):
        load_checkpoint(tmp_path / "ck", restore_rng=True)
    model, optimizer = trained("adam")
    save_checkpoint(tmp_path / "ck2", model=model, optimizer=optimizer)
    with pytest.raises(ValueError, match="ck2.json: optimizer state does not fit"):
        load_checkpoint(tmp_path / "ck2", optimizer=torch.optim.Adam([nn.Parameter(torch.zeros(1))]))


def test_an_edited_json_is_refused_and_one_without_its_hash_still_loads(tmp_path):
    save_checkpoint(tmp_path / "ck", model=Net(), info={"model": {"name": "ram", "config": {"scale_factor": 2}}})
    header = json.loads((tmp_path / "ck.json").read_text())
    edited = json.loads(json.dumps(header))
    edited["info"]["model"]["config"]["scale_factor"] = 3
    (tmp_path / "ck.json").write_text(json.dumps(edited, indent=1))
    for read in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(ValueError, match=r"ck.json: modified after it was written"):
            read(tmp_path / "ck")
    # a checkpoint written before the JSON carried its own hash (and only whitespace changed since) loads
    del header["json_sha256"]
    (tmp_path / "ck.json").write_text(json.dumps(header))
    assert read_checkpoint_info(tmp_path / "ck")["model"]["config"]["scale_factor"] == 2
    load_checkpoint(tmp_path / "ck", model=Net())
