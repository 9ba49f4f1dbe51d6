"""The ``foveal`` command: one module per command group (:data:`COMMAND_MODULES`), each with
``add_parsers(sub)`` whose parsers ``set_defaults(handler=fn)``, ``fn(args) -> int`` (exit status).
Heavy modules (torch) are imported inside the handlers, so that ``foveal --help`` and argument errors
answer at once."""

from __future__ import annotations

import argparse
import importlib
import sys

from foveal.runtime import speed_up_allocator

EPILOG = """examples:
  foveal demo                                      RAM on built-in MNIST digits, ~4 min on 2 cores
  foveal train --config ram-cluttered-fashion-mnist train.iterations=2000 model.location_std=0.1
  foveal train --config my.yaml --run-dir runs/mine   (run again to resume after a kill)
  foveal evaluate runs/mine/checkpoints/best --test-samples 10
  foveal list                                      configs, datasets, models, algorithms, policies
"""

COMMAND_MODULES: tuple[str, ...] = ("foveal.cli.run", "foveal.cli.posterior", "foveal.cli.boed", "foveal.cli.saccader",
                                    "foveal.cli.compare")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="foveal", description="Hard visual attention: train, evaluate and inspect glimpse models.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.version:
        from foveal import __version__

        print(__version__)
        return 0
    if args.command is None:
        _parser().print_help()
        return 2
    speed_up_allocator()
    try:
        return args.handler(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"foveal {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted: the last checkpoint is intact; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
