"""Run every ``bench_*.py`` of this folder in one go and report ratios against the peers.

``python benchmarks/run_all.py [--quick] [--update-readme]`` (``make bench`` does both the peers'
installation and ``--update-readme``). With ``--update-readme`` the table between the
``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers of README.md is rewritten, with the
machine, the date and the command.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _common import Row, print_rows  # noqa: E402

START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def collect(quick: bool) -> list[Row]:
    rows: list[Row] = []
    for path in sorted(HERE.glob("bench_*.py")):
        module = importlib.import_module(path.stem)
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        rows.extend(module.run(quick=quick))
    return rows


def markdown(rows: list[Row], command: str) -> str:
    import torch

    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )
    lines = [
        START,
        f"Measured {datetime.date.today().isoformat()} on {machine}, with `{command}`.",
        "Ratio > 1 means ours is better (faster, smaller) than the peer, measured in the same run.",
        "",
        "| benchmark | metric | ours | peer | peer value | ratio | goal |",
        "| --- | --- | ---: | --- | ---: | ---: | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r.benchmark} | {r.metric} | {r.ours:.4g} | {r.peer_name} | {r.peer:.4g} "
            f"| {r.ratio:.2f}x | {r.goal} |"
        )
    lines.append(END)
    return "\n".join(lines)


def update_readme(table: str) -> None:
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + table + tail
    else:
        text = text.rstrip("\n") + "\n\n## Benchmarks\n\n" + table + "\n"
    readme.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    rows = collect(args.quick)
    print_rows(rows)
    if args.update_readme:
        command = "make bench" if not args.quick else "python benchmarks/run_all.py --quick"
        update_readme(markdown(rows, command))


if __name__ == "__main__":
    main()
