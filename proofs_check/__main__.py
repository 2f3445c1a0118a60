"""``python -m proofs_check [--quick | --thorough] [--only ID ...] [--docs PATH | --no-docs]``.

Prints the table of theorems (id, statement, instances, worst margin, verdict), writes
``docs/proofs.md`` when the whole registry was checked, and exits 1 only if a statement the
library relies on failed (or its check crashed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from .registry import Mode, theorems
from .report import format_table, summary_lines, write_markdown
from .runner import Outcome, exit_code, run_all

DEFAULT_DOCS = Path(__file__).resolve().parent.parent / "docs" / "proofs.md"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m proofs_check", description=__doc__.split("\n")[0])
    group = p.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="quick mode (default; CI)")
    group.add_argument("--thorough", action="store_true", help="many more instances")
    p.add_argument("--only", nargs="+", metavar="ID", help="check only these theorem ids")
    p.add_argument("--seed", type=int, default=0, help="base seed of the random samples")
    p.add_argument(
        "--docs",
        type=Path,
        default=None,
        help=f"where to write the report (default {DEFAULT_DOCS} for full runs)",
    )
    p.add_argument("--no-docs", action="store_true", help="do not write the report")
    p.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    p.add_argument("--list", action="store_true", help="list the theorem ids and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the checks run thousands of tiny "
        "problems, where thread start-up dominates)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        for t in theorems():
            print(f"{t.id:14s} {'relied on ' if t.relied_on else 'informative'}  {t.title}")
        return 0
    mode = Mode("thorough" if args.thorough else "quick", seed=args.seed)
    torch.set_num_threads(max(1, args.threads))

    def progress(outcome: Outcome, i: int, n: int) -> None:
        if not args.quiet:
            print(
                f"[{i:2d}/{n}] {outcome.theorem.id:14s} {outcome.label:22s} "
                f"{outcome.result.seconds:6.1f} s",
                file=sys.stderr,
                flush=True,
            )

    start = time.perf_counter()
    outcomes = run_all(mode, args.only, progress)
    seconds = time.perf_counter() - start
    print(format_table(outcomes))
    print()
    for line in summary_lines(outcomes):
        print(line)
    print(f"{mode.name} mode, {seconds:.1f} s")
    command = "python -m proofs_check" + (" --thorough" if mode.thorough else "")
    if args.seed:
        command += f" --seed {args.seed}"
    docs = args.docs if args.docs is not None else (DEFAULT_DOCS if args.only is None else None)
    if docs is not None and not args.no_docs:
        path = write_markdown(docs, outcomes, mode=mode.name, command=command, seconds=seconds)
        print(f"wrote {path}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "id": o.theorem.id,
                        "relied_on": o.theorem.relied_on,
                        "label": o.label,
                        **o.result.to_dict(),
                    }
                    for o in outcomes
                ],
                indent=2,
                default=str,
            )
        )
    return exit_code(outcomes)


if __name__ == "__main__":
    sys.exit(main())
