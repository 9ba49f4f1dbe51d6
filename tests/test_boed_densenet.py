"""DenseNet-121 (torchvision's layout without torchvision) and the ``posterior-densenet121`` posterior."""

import pytest
import torch
from safetensors.torch import save_file

from foveal.boed import NetworkPosterior, Posterior
from foveal.models import MODELS, create_model, model_spec
from foveal.models.densenet import densenet121
from foveal.retina import masked_input


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def posterior(**over):
    return create_model("posterior-densenet121", **{"in_channels": 3, "num_classes": 5, "image_size": (64, 64), **over})


def trained_looking(net):
    """Random BatchNorm statistics and affine terms, so that loading them is visible in the output."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return net.eval()


def test_densenet121_has_torchvisions_parameters_and_names():
    net = densenet121()
    state = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == 7_978_856  # torchvision's documented count
    # 121 BatchNorms x 5 entries + 120 convolutions + classifier weight and bias
    assert len(state) == 727 and net.num_features == 1024
    shapes = {"features.conv0.weight": (64, 3, 7, 7), "features.norm0.num_batches_tracked": (),
              "features.denseblock1.denselayer1.norm1.running_var": (64,),
              "features.denseblock1.denselayer6.conv2.weight": (32, 128, 3, 3),
              "features.transition1.conv.weight": (128, 256, 1, 1), "features.transition3.norm.weight": (1024,),
              "features.denseblock4.denselayer16.conv1.weight": (128, 992, 1, 1), "features.norm5.bias": (1024,),
              "classifier.weight": (1000, 1024), "classifier.bias": (1000,)}
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert not any(k.startswith("features.denseblock1.denselayer7") for k in state)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 1000)


def test_posterior_shapes_gradients_and_spec():
    assert "posterior-densenet121" in MODELS.names(kind="posterior")
    torch.manual_seed(0)
    model = posterior()
    assert model.first_conv.weight.shape == (64, 4, 7, 7) and model.first_conv.weight[:, 3].abs().sum() == 0
    x = masked_input(torch.rand(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float())
    logits = model(x)
    assert logits.shape == (2, 5) and not model.multilabel
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 4])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    multi = posterior(multilabel=True, num_classes=7, in_channels=1, image_size=(32, 40), drop_rate=0.1)
    assert multi.multilabel and multi(masked_input(torch.rand(2, 1, 32, 40), torch.ones(2, 1, 32, 40))).shape == (2, 7)
    spec = model_spec(multi)
    assert spec["config"]["weights"] is None
    clone = create_model(spec["name"], **spec["config"])
    clone.load_state_dict(multi.state_dict())


def test_network_posterior_adapter():
    model = posterior(multilabel=True).train()
    post = NetworkPosterior(model)
    assert isinstance(post, Posterior) and post.multilabel
    out = post.logits(torch.rand(2, 3, 64, 64), torch.ones(2, 1, 64, 64))
    assert out.shape == (2, 5) and not out.requires_grad and model.training


def test_imagenet_weights_load_with_a_zero_mask_channel_and_are_not_needed_to_rebuild(tmp_path):
    torch.manual_seed(0)
    plain = trained_looking(densenet121())
    path = tmp_path / "densenet121.safetensors"
    save_file(plain.state_dict(), str(path))
    model = posterior(weights=str(path)).eval()
    conv = model.first_conv.weight
    assert torch.equal(conv[:, :3], plain.features.conv0.weight) and conv[:, 3].abs().sum() == 0
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        # mask all ones: the plain network's features on the image
        assert torch.allclose(model.forward_features(masked_input(x, torch.ones(2, 1, 64, 64))),
                              plain.forward_features(x), atol=1e-5)
        m = (torch.rand(2, 1, 64, 64) > 0.5).float()  # any mask: the plain network on x * m
        assert torch.allclose(model.forward_features(masked_input(x, m)), plain.forward_features(x * m), atol=1e-5)
    assert model.config.weights is None and model.config.pretrained_from == str(path)
    spec = model_spec(model)
    path.unlink()  # a checkpoint rebuilds from its spec without the ImageNet file
    clone = create_model(spec["name"], **spec["config"]).eval()
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(clone(masked_input(x, m)), model(masked_input(x, m)))


def test_original_pth_layout_loads(tmp_path):
    """The original ImageNet file: ``norm.1``-style keys, no ``num_batches_tracked``, a 1000-way head."""
    torch.manual_seed(0)
    plain = trained_looking(densenet121(in_channels=1))
    old = {}
    for key, value in plain.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        for name in ("norm1", "relu1", "conv1", "norm2", "relu2", "conv2"):
            key = key.replace(f".{name}.", f".{name[:-1]}.{name[-1]}.") if ".denselayer" in key else key
        old[key] = value
    assert "features.denseblock2.denselayer3.norm.2.running_mean" in old and len(old) == 727 - 121
    torch.save({"state_dict": old}, tmp_path / "old.pth")
    model = posterior(in_channels=1, weights=str(tmp_path / "old.pth")).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.forward_features(masked_input(x, torch.ones(2, 1, 64, 64))),
                              plain.forward_features(x), atol=1e-5)


def test_errors_name_the_file_the_keys_and_the_shapes(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        posterior(weights=str(tmp_path / "nowhere.safetensors"))
    (tmp_path / "w.bin").write_bytes(b"")
    with pytest.raises(ValueError, match=r"expected a .safetensors, .pth or .pt file, found 'w.bin'"):
        posterior(weights=str(tmp_path / "w.bin"))
    state = densenet121().state_dict()
    bad = {k: v for k, v in state.items() if k != "features.norm5.weight"}
    bad["head.fc.weight"] = torch.zeros(2, 2)
    save_file(bad, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"bad.safetensors: .*missing keys: features.norm5.weight; "
                                         r"unexpected keys: head.fc.weight"):
        posterior(weights=str(tmp_path / "bad.safetensors"))
    save_file(state, str(tmp_path / "rgb.safetensors"))
    with pytest.raises(ValueError, match=r"rgb.safetensors: features.conv0.weight: expected \[64, 1, 7, 7\].*"
                                         r"found \[64, 3, 7, 7\]"):
        posterior(in_channels=1, weights=str(tmp_path / "rgb.safetensors"))
    state["features.norm5.bias"] = torch.zeros(3)
    save_file(state, str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match=r"wrong shapes.*features.norm5.bias \[3\] \(expected \[1024\]\)"):
        posterior(weights=str(tmp_path / "shape.safetensors"))
    with pytest.raises(ValueError, match=r"DenseNetPosteriorConfig.image_size: expected \(H, W\) with H, W >= 32"):
        posterior(image_size=(16, 64))
    with pytest.raises(ValueError, match=r"expected input \[B, 4, H, W\].*found \[1, 3, 64, 64\]"):
        posterior()(torch.zeros(1, 3, 64, 64))
