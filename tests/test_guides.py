"""The guides' commands run as written (``docs/guides/*.md``), on tiny data, so that a changed flag fails here.

Every fenced ``bash`` block of a guide runs, in the guide's order, in one temporary folder per guide, after
that guide's fixture (:data:`FIXTURES`) has made the data the guide starts from (a user has their own).
A block right after a ``<!-- not run: reason -->`` line is skipped (say why: it needs a GPU, a cluster, a
download). Each ``foveal COMMAND`` (also under ``torchrun ... -m foveal``) gets :data:`SMALL`'s overrides
for that command appended, so that it takes seconds: the commands' words are the guide's, only the sizes
change. Blocks are whole shell scripts (run with ``bash -euo pipefail``), lines joined at a trailing ``\\``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDES = ROOT / "docs" / "guides"
BIN = Path(sys.executable).parent

_TRAIN = ["train.iterations=4", "train.val_every=2", "train.val_batches=1", "train.batch_size=8",
          "train.eval_batch_size=8", "train.tensorboard=false"]
# the overrides appended to each command, by its name
SMALL: dict[str, list[str]] = {
    "train": _TRAIN,
    "train-posterior": _TRAIN,
    "demo": _TRAIN,
    "annotate": ["count=4", "n_completions=4", "n_proposals=16", "pca_components=4", "chunk_size=2"],
    "compare": [*_TRAIN, "seeds=[0]", "inputs.num_sequences=4"],
    "train-saccader": _TRAIN,
    "evaluate-policies": ["--occlusion-iterations", "4", "--limit", "16"],
}
_FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", re.S | re.M)
_NOT_RUN = re.compile(r"<!--\s*not run:.*?-->\s*$")
_FOVEAL = re.compile(r"(?:^|\s)(?:foveal|-m foveal)\s+([\w-]+)")


def command_blocks(text: str) -> list[str]:
    """The ``bash`` blocks of a Markdown page that are to run, in order."""
    blocks = []
    for m in _FENCE.finditer(text):
        before = text[:m.start()].rstrip().splitlines()
        if m.group(1) == "bash" and not (before and _NOT_RUN.search(before[-1])):
            blocks.append(m.group(2))
    return blocks


def shrink(block: str) -> str:
    """The block with continuation lines joined and :data:`SMALL`'s overrides appended to each foveal command."""
    lines = re.sub(r"\s*\\\n\s*", " ", block).splitlines()
    out = []
    for line in lines:
        m = _FOVEAL.search(line)
        if m and m.group(1) in SMALL and not line.rstrip().endswith(("&", "|", "&&")):
            line = f"{line.rstrip()} {' '.join(SMALL[m.group(1)])}"
        out.append(line)
    return "\n".join(out)


def _images(folder: Path, classes=("circle", "square"), per_class=20, size=80) -> None:
    """Coloured circles and squares at random places on dark backgrounds: two easy classes."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    for c in classes:
        (folder / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = Image.new("RGB", (size, size), (int(rng.integers(0, 60)),) * 3)
            x, y = (int(v) for v in rng.integers(5, size - 30, 2))
            shape = ImageDraw.Draw(image).ellipse if c == "circle" else ImageDraw.Draw(image).rectangle
            shape([x, y, x + 25, y + 25], fill=(230, 200, 40))
            image.save(folder / c / f"{i:03d}.png")


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "OMP_NUM_THREADS": "1"}


def _nogs_inputs(folder: Path) -> None:
    """The PS-NOGS guide's photos, posterior and bank (its first two blocks, made small)."""
    _images(folder / "photos", per_class=80)
    for block in command_blocks((GUIDES / "ps-nogs.md").read_text())[:2]:
        subprocess.run(["bash", "-euo", "pipefail", "-c", shrink(block)], cwd=folder, env=_env(), check=True,
                       capture_output=True, timeout=600)


# what each guide starts from, made in its folder
FIXTURES = {
    "own-images": lambda d: _images(d / "photos"),
    "ps-nogs": lambda d: _images(d / "photos", per_class=80),  # 128 training images: 100 annotated, 28 bank
    "saccader": lambda d: _images(d / "photos", per_class=80),  # the occlusion CNN trains on batches of 64
    "scale-out": _nogs_inputs,
}


def guides() -> list[Path]:
    return sorted(GUIDES.glob("*.md"))


def test_the_guides_exist_and_have_commands():
    names = {p.stem for p in guides()}
    assert {"own-images", "ps-nogs", "saccader", "scale-out"} <= names
    for path in guides():
        assert command_blocks(path.read_text()), f"{path}: no bash block to run"


def test_blocks_and_overrides_are_read_as_written():
    text = ("intro\n```bash\nfoveal train --config demo \\\n    data.root=x\n```\n<!-- not run: needs a GPU -->\n"
            "```bash\nfoveal train --device cuda\n```\n```text\nfoveal list\n```\n")
    blocks = command_blocks(text)
    assert blocks == ["foveal train --config demo \\\n    data.root=x\n"]
    assert shrink(blocks[0]) == "foveal train --config demo data.root=x " + " ".join(SMALL["train"])
    assert shrink("torchrun --nproc-per-node=2 -m foveal train --config demo").endswith(" ".join(SMALL["train"]))
    assert shrink("foveal evaluate runs/x") == "foveal evaluate runs/x"


@pytest.mark.parametrize("guide", guides(), ids=lambda p: p.stem)
def test_guide_commands_run(guide: Path, tmp_path: Path):
    FIXTURES.get(guide.stem, lambda d: None)(tmp_path)
    env = _env()
    for k, block in enumerate(command_blocks(guide.read_text())):
        script = shrink(block)
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (f"{guide.name}, block {k + 1}:\n{script}\n--- exit {done.returncode}; "
                                      f"output:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
