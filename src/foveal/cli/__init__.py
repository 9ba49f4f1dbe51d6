"""The ``foveal`` command: one module per command group (:data:`COMMAND_MODULES`), each with
``add_parsers(sub)`` whose parsers ``set_defaults(handler=fn)``, ``fn(args) -> int`` (exit status).
Heavy modules (torch) are imported inside the handlers, so that ``foveal --help`` and argument errors
answer at once.

Under torchrun (``torchrun --nproc-per-node=N -m foveal train ...``) the training commands
(:data:`DATA_PARALLEL_COMMANDS`) train one run data-parallel: every process joins the world before the
command runs and leaves it after (:mod:`foveal.training.distributed`); rank 0 alone writes and reports.
Other commands keep their own use of torchrun's ranks (``compare`` trains different runs on them)."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

from foveal.runtime import launcher_world_size, speed_up_allocator

EPILOG = """examples:
  foveal demo                                      RAM on built-in MNIST digits, ~4 min on 2 cores
  foveal train --config ram-cluttered-fashion-mnist train.iterations=2000 model.location_std=0.1
  foveal train --config my.yaml --run-dir runs/mine   (run again to resume after a kill)
  torchrun --nproc-per-node=2 -m foveal train --config demo   one run on 2 processes (data-parallel)
  foveal train --config demo --run-dir runs/photos data.name=imagefolder data.root=photos data.image_size=64 data.canvas=null
                                                   your own class folders, resized to 64x64 (data.grayscale=true: 1 channel)
  foveal evaluate runs/mine --test-samples 10      the run's best checkpoint, into runs/mine/eval-<split>
  foveal list                                      configs; models, algorithms, datasets (with options), policies
"""

COMMAND_MODULES: tuple[str, ...] = ("foveal.cli.run", "foveal.cli.posterior", "foveal.cli.boed", "foveal.cli.sequences",
                                    "foveal.cli.saccader", "foveal.cli.compare")
# the commands that train one run through train_run: under torchrun, data-parallel
DATA_PARALLEL_COMMANDS: tuple[str, ...] = ("train", "train-posterior", "train-saccader", "demo")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (argparse prints its usage block first) that point to ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="foveal", description="Hard visual attention: train, evaluate and inspect glimpse models.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parsers(sub)
    return p


# an override as a training command takes it: section.key=value
_OVERRIDE = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*=")


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Arguments, with overrides accepted wherever they stand among the options.

    argparse takes a command's ``key=value`` overrides as one run of positionals, so a second run
    (``--quiet train.iterations=5 --run-dir r train.lr=0.1``) would be "unrecognized"; those are
    appended to the first, in order. An option whose value looks like an override (``--run-dir
    train.iterations=5``: the folder was forgotten) and anything else argparse does not know are errors
    that say what to write instead.
    """
    args, extra = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    prog = f"foveal {command}" if command else "foveal"
    takes_overrides = isinstance(getattr(args, "overrides", None), list)
    for dest, value in vars(args).items():
        if dest not in ("overrides", "command", "handler") and isinstance(value, (str, Path)) \
                and "." in str(value).partition("=")[0] and _OVERRIDE.match(str(value)):
            option = "--" + dest.replace("_", "-")
            parser.exit(2, f"{prog}: error: {option} got {str(value)!r}, which is an override, not its value; "
                           f"write {option} VALUE, then the overrides (see {prog} --help)\n")
    overrides = [x for x in extra if _OVERRIDE.match(x)]
    unknown = [x for x in extra if not _OVERRIDE.match(x)]
    if overrides and not takes_overrides:
        parser.exit(2, f"{prog}: error: takes no key=value overrides, found {' '.join(overrides)} "
                       f"(see {prog} --help for its options)\n")
    if unknown:
        hint = " (settings are overrides, e.g. train.iterations=500, not options)" if takes_overrides and any(
            x.startswith("--") for x in unknown) else ""
        parser.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)}{hint} (see {prog} --help)\n")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    return args


def _one_line(err: BaseException) -> str:
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip()) or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parse(parser, argv)
    if args.version:
        from foveal import __version__

        print(__version__)
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    speed_up_allocator()
    rank = None  # this process's rank in a data-parallel run; None: one process
    try:
        if args.command in DATA_PARALLEL_COMMANDS and launcher_world_size() > 1:
            from foveal.training import distributed

            rank = distributed.start().rank
        status = args.handler(args)
    except (ValueError, OSError) as err:  # FileNotFoundError, PermissionError, a full disk: the user can act
        who = f" (rank {rank})" if rank else ""
        print(f"foveal {args.command}{who}: error: {_one_line(err)}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        if not rank:
            from foveal.cli.common import interrupted_message

            print("\n" + interrupted_message(args, argv), file=sys.stderr)
        status = 130
    if rank is not None:
        from foveal.training import distributed

        distributed.stop(wait=status == 0)  # after an error the other ranks may never reach the barrier
    return status


if __name__ == "__main__":
    raise SystemExit(main())
