"""Check foveal's DenseNet-121 against torchvision's, key for key and output for output.

foveal does not depend on torchvision (see the README); this script needs a separate environment that
has it, e.g. on x86_64 with Python 3.11 (5.5 GB):

    python3.11 -m venv /tmp/tvenv
    /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy safetensors pyyaml
    OMP_NUM_THREADS=1 /tmp/tvenv/bin/python benchmarks/gpu/densenet_torchvision.py

It loads a randomly initialised torchvision ``densenet121`` state dict into
:func:`foveal.models.densenet.densenet121` with ``strict=True`` and compares the logits on 224 px images;
then it saves that state dict as .safetensors and as .pth, builds ``posterior-densenet121`` from each
file and compares its features on ``[x * m, m]`` with torchvision's on ``x * m`` (the mask channel
starts at zero). Every difference printed should be 0.
"""

import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import torchvision  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from foveal.models import create_model  # noqa: E402
from foveal.models.densenet import densenet121  # noqa: E402
from foveal.retina import masked_input  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    tv = torchvision.models.densenet121(weights=None).eval()
    ours = densenet121().eval()
    state = tv.state_dict()
    print(f"torchvision {torchvision.__version__}: {len(state)} state-dict entries, "
          f"{sum(p.numel() for p in tv.parameters()):,} parameters")
    print("same keys in the same order:", list(state) == list(ours.state_dict()))
    print("strict load:", ours.load_state_dict(state, strict=True))
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        print("max |logits difference|:", (tv(x) - ours(x)).abs().max().item())
    folder = Path(tempfile.mkdtemp())
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "densenet121.safetensors"))
    torch.save(state, folder / "densenet121.pth")
    m = (torch.rand(2, 1, 224, 224) > 0.5).float()
    for path in (folder / "densenet121.safetensors", folder / "densenet121.pth"):
        post = create_model("posterior-densenet121", in_channels=3, num_classes=2, image_size=(224, 224),
                            weights=str(path)).eval()
        with torch.no_grad():
            ours_f = post.forward_features(masked_input(x, m))
            tv_f = torch.nn.functional.adaptive_avg_pool2d(torch.relu(tv.features(x * m)), 1).flatten(1)
        print(f"{path.name}: max |posterior features on [x*m, m] - torchvision features on x*m|:",
              (ours_f - tv_f).abs().max().item())


if __name__ == "__main__":
    main()
