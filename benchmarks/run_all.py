"""Run every ``bench_*.py`` of this folder in one go and report ratios against the peers.

``python benchmarks/run_all.py [--quick] [--only NAME ...] [--update-readme]`` (``make bench``
does both the peers' installation and ``--update-readme``). With ``--update-readme`` the table
between the ``<!-- bench:start -->`` and ``<!-- bench:end -->`` markers of README.md is
rewritten, with the machine, the date and the command. With ``--only dataloader`` just
``bench_dataloader.py`` runs, and only its rows (those whose benchmark starts with
``dataloader:``) are replaced in the table, which then says when those rows were measured.
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


def collect(quick: bool, only: list[str] | None = None) -> list[Row]:
    rows: list[Row] = []
    for path in sorted(HERE.glob("bench_*.py")):
        if only and path.stem.removeprefix("bench_") not in only:
            continue
        module = importlib.import_module(path.stem)
        print(f"running {path.name} ...", file=sys.stderr, flush=True)
        rows.extend(module.run(quick=quick))
    return rows


def measured(command: str) -> str:
    """The line saying when, where and how rows were measured."""
    import torch

    machine = (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )
    return f"Measured {datetime.date.today().isoformat()} on {machine}, with `{command}`."


def table_row(r: Row) -> str:
    return (
        f"| {r.benchmark} | {r.metric} | {r.ours:.4g} | {r.peer_name} | {r.peer:.4g} "
        f"| {r.ratio:.2f}x | {r.goal} |"
    )


def markdown(rows: list[Row], command: str) -> str:
    lines = [
        START,
        measured(command),
        "Ratio > 1 means ours is better (faster, smaller) than the peer, measured in the same run.",
        "",
        "| benchmark | metric | ours | peer | peer value | ratio | goal |",
        "| --- | --- | ---: | --- | ---: | ---: | --- |",
    ]
    lines.extend(table_row(r) for r in rows)
    lines.append(END)
    return "\n".join(lines)


def replace_rows(table: str, rows: list[Row], only: list[str], command: str) -> str:
    """`table` (the README's) with the rows of the benchmarks `only` replaced by `rows`, in
    place of the first old one, and a line saying when they were measured."""
    prefixes = tuple(f"| {name}:" for name in only)
    lines = table.split("\n")
    first = next((i for i, line in enumerate(lines) if line.startswith(prefixes)), None)
    kept = [line for line in lines if not line.startswith(prefixes)]
    at = first if first is not None else kept.index(END)
    note = f"Rows of {', '.join(only)}: " + measured(command)
    kept = [line for line in kept if not line.startswith(f"Rows of {', '.join(only)}: ")]
    kept[at:at] = [table_row(r) for r in rows]
    kept.insert(2, note)
    return "\n".join(kept)


def update_readme(rows: list[Row], command: str, only: list[str] | None) -> None:
    readme = HERE.parent / "README.md"
    text = readme.read_text()
    table = markdown(rows, command)
    if START in text and END in text:
        head, rest = text.split(START, 1)
        old, tail = rest.split(END, 1)
        if only:
            table = replace_rows(START + old + END, rows, only, command)
        text = head + table + tail
    else:
        text = text.rstrip("\n") + "\n\n## Benchmarks\n\n" + table + "\n"
    readme.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only bench_NAME.py (e.g. dataloader)"
    )
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args()
    rows = collect(args.quick, args.only)
    print_rows(rows)
    if args.update_readme:
        command = "make bench" if not args.quick else "python benchmarks/run_all.py --quick"
        if args.only:
            command = f"python benchmarks/run_all.py --only {' '.join(args.only)}"
        update_readme(rows, command, args.only)


if __name__ == "__main__":
    main()
