"""The guides' commands run as written (``docs/guides/*.md``), on tiny data, so that a changed flag fails here.

Every fenced ``bash`` block of a guide (and of ``docs/getting-started.md``) runs, in the guide's order, in one
temporary folder per guide, after that guide's fixture (:data:`FIXTURES`) has made the data the guide starts
from (a user has their own). A block right after a ``<!-- not run: reason -->`` line is skipped (say why: it
needs a GPU, a cluster, a download). Each ``foveal COMMAND`` (also under ``torchrun ... -m foveal``) gets
:data:`SMALL`'s overrides for that command appended, so that it takes seconds: the commands' words are the
guide's, only the sizes change (and, for a guide in :data:`DATA`, where the data lie). Blocks are whole shell
scripts (run with ``bash -euo pipefail``), lines joined at a trailing ``\\``. The last test checks that the
pages name only files that are in the repository.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foveal.data.mnist import FASHION_MNIST_ROOT
from toys import release_folder  # tests/toys.py

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
    "build-bank": ["--limit", "64"],
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


def shrink(block: str, data: dict[str, list[str]] | None = None) -> str:
    """The block with continuation lines joined and :data:`SMALL`'s overrides appended to each foveal command
    (and ``data``'s, by command name: where the data lie)."""
    lines = re.sub(r"\s*\\\n\s*", " ", block).splitlines()
    out = []
    for line in lines:
        m = _FOVEAL.search(line)
        extra = [*(data or {}).get(m.group(1), []), *SMALL.get(m.group(1), [])] if m else []
        if extra and not line.rstrip().endswith(("&", "|", "&&")):
            line = f"{line.rstrip()} {' '.join(extra)}"
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


def _study_folder(folder: Path) -> None:
    """What the reproduction guide needs in its folder, which stands for the repository root: the studies'
    configs (copied: the commands never write into ``benchmarks/``), and Fashion-MNIST as a user has it, with a
    test file of its first 100 images (``fashion/``, the training files linked), so that every test rollout of
    the studies' runs is over 100 images instead of 10,000 (:data:`DATA`)."""
    for path in ["benchmarks/configs", "benchmarks/ps-nogs/compare.yaml"]:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copytree if (ROOT / path).is_dir() else shutil.copy
        copy(ROOT / path, folder / path)
    import gzip

    source, data = Path(FASHION_MNIST_ROOT), folder / "fashion"
    data.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        (data / name).symlink_to(source / name)
    for name, header, size in (("t10k-images-idx3-ubyte", 16, 28 * 28), ("t10k-labels-idx1-ubyte", 8, 1)):
        raw = bytearray(gzip.decompress((source / f"{name}.gz").read_bytes())[:header + 100 * size])
        raw[4:8] = (100).to_bytes(4, "big")  # the count in the IDX header
        (data / name).write_bytes(bytes(raw))


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
    "released-sequences": release_folder,  # CelebA-HQ and CUB stand-ins in the release's exact layouts
    "reproduce": _study_folder,  # the studies' configs, and Fashion-MNIST with a 100-image test split
    "scale-out": _nogs_inputs,
}
# where a guide's data lie when not where its commands expect them, as each command is told it
_FASHION = "fashion"
DATA: dict[str, dict[str, list[str]]] = {
    "reproduce": {**{c: [f"data.root={_FASHION}"] for c in ("train", "train-posterior", "train-saccader", "compare")},
                  **{c: ["--data-root", _FASHION] for c in ("build-bank", "annotate", "sequences")}},
}
# data a guide needs from the machine, as make setup installs it; without it the guide is skipped
NEEDS = {"reproduce": Path(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz")}


def guides() -> list[Path]:
    """The pages whose commands run: every guide, and the getting-started page."""
    return sorted(GUIDES.glob("*.md")) + [ROOT / "docs" / "getting-started.md"]


def test_the_guides_exist_and_have_commands():
    names = {p.stem for p in guides()}
    assert {"own-images", "ps-nogs", "saccader", "released-sequences", "reproduce", "getting-started",
            "scale-out"} <= names
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
    assert shrink("foveal build-bank x --out b", {"build-bank": ["--data-root", "d"]}) == \
        "foveal build-bank x --out b --data-root d --limit 64"


@pytest.mark.parametrize("guide", guides(), ids=lambda p: p.stem)
def test_guide_commands_run(guide: Path, tmp_path: Path):
    if guide.stem in NEEDS and not NEEDS[guide.stem].is_file():
        pytest.skip(f"{NEEDS[guide.stem]} is missing (make setup installs it)")
    FIXTURES.get(guide.stem, lambda d: None)(tmp_path)
    env = _env()
    for k, block in enumerate(command_blocks(guide.read_text())):
        script = shrink(block, DATA.get(guide.stem))
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (f"{guide.name}, block {k + 1}:\n{script}\n--- exit {done.returncode}; "
                                      f"output:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")


_CITED = re.compile(r"(?<![\w./-])((?:benchmarks|tests|src|docs)/[\w./{},*-]*[\w}])")


def cited_paths(text: str) -> list[str]:
    """The repository paths a page names (``benchmarks/...``, ``tests/...``, ``src/...``, ``docs/...``), with
    ``{a,b}`` expanded. Left out: a path with ``<...>`` in it (a placeholder), one after ``--out`` or
    ``--run-dir`` (what a command will write) and ``docs/_build`` (what ``make docs`` makes)."""
    out = []
    for m in _CITED.finditer(text):
        path = m.group(1)
        written = text[:m.start()].rstrip().endswith(("--out", "--run-dir"))
        if "<" in text[m.end():m.end() + 1] or written or path.startswith("docs/_build"):
            continue
        braces = re.search(r"\{([^{}]*)\}", path)
        if braces:
            out += [path[:braces.start()] + part + path[braces.end():] for part in braces.group(1).split(",")]
        else:
            out.append(path)
    return out


def test_pages_cite_only_files_that_exist():
    pages = sorted((ROOT / "docs").glob("*.md")) + sorted((ROOT / "docs").glob("*/*.md"))
    missing = [f"{page.relative_to(ROOT)}: {path}" for page in pages if page.parent.name != "reference"
               for path in cited_paths(page.read_text()) if not any(ROOT.glob(path))]
    assert not missing, "pages name files that are not in the repository:\n" + "\n".join(missing)


_CITED_FILE = re.compile(r"(?<![\w./-])((?:benchmarks|docs|examples)/[\w./-]*\.(?:md|py|sh|yaml|json|csv|png|sbatch))\b")


def test_source_cites_only_files_that_exist():
    """The package's docstrings and comments name documentation, benchmark and example files that exist (a
    fact they rely on must be where they say)."""
    missing = [f"{path.relative_to(ROOT)}: {cited}" for path in sorted((ROOT / "src" / "foveal").rglob("*.py"))
               for cited in _CITED_FILE.findall(path.read_text()) if not (ROOT / cited).exists()]
    assert not missing, "source files name files that are not in the repository:\n" + "\n".join(missing)
