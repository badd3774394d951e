"""The ``checkpointable`` command: ``demo`` (the main job) and ``inspect``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``checkpointable`` console script and ``python -m checkpointable``."""
    parser = argparse.ArgumentParser(
        prog="checkpointable", description="Data loading that resumes exactly."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    inspect = commands.add_parser(
        "inspect", help="print the data-loading state held by a checkpoint file"
    )
    inspect.add_argument(
        "path",
        help="a torch.save or JSON checkpoint file, or a torch.distributed.checkpoint folder",
    )
    inspect.add_argument("--key", help="dotted path of the part to show, e.g. stream.loader")
    inspect.add_argument("--json", action="store_true", help="print the report as JSON")

    demo = commands.add_parser(
        "demo", help="train, kill the run at a random step, resume, and compare"
    )
    from ._demo.cli import add_arguments

    add_arguments(demo)

    args = parser.parse_args(argv)
    if args.command == "inspect":
        from ._inspect import main as inspect_main

        try:
            return inspect_main(args.path, args.key, as_json=args.json)
        except BrokenPipeError:  # the output was piped into a reader that stopped (head)
            sys.stderr.close()
            return 0
    from ._demo.cli import run

    return run(args)


if __name__ == "__main__":
    sys.exit(main())
