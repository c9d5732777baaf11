"""The ``dinolite`` command. User mistakes print one line and exit with code 2."""

from __future__ import annotations

import argparse
import sys

from .commands import attention, distill, embed, export, finetune, knn, linear, plot, pretrain, shards
from .errors import TrainingDiverged, UserError, one_line
from .files import WriteFailed

# each module registers its own subcommand
COMMANDS = [pretrain, distill, shards, knn, linear, embed, export, attention, plot, finetune]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="dinolite", description="DINO self-supervised pretraining.")
    parser.add_argument("--version", action="version", version=f"dinolite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def _rank_tag() -> str:
    """" (rank N)" in a multi-process run, so each rank's log line says where it came from."""
    from .distributed import read_rendezvous

    try:
        rdv = read_rendezvous()
    except UserError:
        return ""
    return f" (rank {rdv.rank})" if rdv.world > 1 else ""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with ``key=value`` overrides accepted anywhere among the flags
    (``dinolite pretrain optim.epochs=1 --no-progress train.output_dir=runs/x``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = [e for e in extra if "=" in e and not e.startswith("-")]
    if extra and (not hasattr(args, "overrides") or len(overrides) != len(extra)):
        parser.error(f"unrecognized arguments: {' '.join(e for e in extra if e not in overrides) or ' '.join(extra)}")
    if extra:
        args.overrides = list(args.overrides) + overrides
    return args


def _say(line: str) -> None:
    """One line to stderr in a single write: the ranks of a run share the stream, and a line written in
    two parts (text, then newline) can be cut by another rank's."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from .engine.allocator import keep_blocks

    keep_blocks()  # every command's tensors: reused heap blocks, not a page fault per block per step
    try:
        return args.func(args)
    except UserError as err:
        _say(f"dinolite{_rank_tag()}: error: {one_line(err)}")
        return 2
    except TrainingDiverged as err:
        _say(f"dinolite{_rank_tag()}: training stopped: {err}")
        return 1
    except WriteFailed as err:  # disk full, permissions: the files written before are intact
        _say(f"dinolite{_rank_tag()}: error: {err}")
        return 1
    except KeyboardInterrupt:
        _say("dinolite: interrupted; resume with the same command")
        return 130
    finally:
        # A rank that leaves a gloo/NCCL group without destroying it may abort at exit
        # ("terminate called without an active exception") while the others still use the group.
        from .distributed import cleanup

        cleanup()


if __name__ == "__main__":
    sys.exit(main())
