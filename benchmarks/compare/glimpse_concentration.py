"""How concentrated a trained model's test glimpses are: for each glimpse t, the share of test images
sent to the single most common place, from the glimpse records a run writes (``records/glimpses_test.npz``).

    .venv/bin/python benchmarks/compare/glimpse_concentration.py runs/compare-3k/runs/{ram,ps-nogs,ps-nogs-10,ps-nogs-25}/seed-0

1.0 at t = 1 is expected (the first place is chosen before any glimpse); a policy that looks at the
same place for most images at later glimpses has not learnt where to look per image.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from foveal.evaluation.records import load_glimpse_record


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders (with records/glimpses_test.npz)")
    args = p.parse_args(argv)
    for run in args.runs:
        path = run / "records" / "glimpses_test.npz"
        if not path.exists():
            print(f"{path}: no test glimpse record (is the run finished?)", file=sys.stderr)
            return 2
        locations = np.asarray(load_glimpse_record(path).locations)  # [N, T, 2]
        shares = [np.unique(np.round(locations[:, t], 4), axis=0, return_counts=True)[1].max() / len(locations)
                  for t in range(locations.shape[1])]
        print(f"{run}: " + "  ".join(f"t{t + 1} {100 * s:.0f} %" for t, s in enumerate(shares)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
