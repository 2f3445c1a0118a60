"""Long property run of ``certify`` against the exact float64 operator (issues 4 and 12).

Usage::

    python benchmarks/soak_certify.py --cases 100000 --out benchmarks/results/soak_certify.json
    python benchmarks/soak_certify.py --adversarial --cases 20000 \
        --out benchmarks/results/soak_certify_adversarial.json

The default (mixed) mode:

Draws layers from ``specbound.testing.layers`` (every padding mode, pads up to ``d(k-1)``,
strides, dilations, groups, rectangular kernels and inputs, the adversarial kernel families)
and asserts ``lower <= exact <= upper`` with bare comparisons, ``rel_gap <= rtol`` when
converged, and ``verify()``. Progress (cases checked, failures, elapsed) is written to ``--out``
every 1000 cases, so an interrupted run still reports what it checked.

``--adversarial`` draws the families of :mod:`specbound.testing.adversarial` on purpose
(exactly tight kernels at rtol 1e-12, subnormal and 1e+-300 scales, mixed-scale groups, every
dtype, pads beyond ``d(k-1)`` with and without a size, stride and dilation beyond the input,
``max_seconds=1e-3``, ``guarantee="probabilistic"``), checks each against the mpmath norm of
the exact operator (:func:`~specbound.testing.adversarial.check_case`) and counts cases and
failures per family (``--families`` restricts them).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import specbound as sb
from specbound.operators import exact_norm
from specbound.testing import layers


def adversarial(args: argparse.Namespace) -> int:
    """The ``--adversarial`` mode: per-family counts of cases and failures."""
    from specbound.testing.adversarial import CASE_FAMILIES, adversarial_cases, check_case

    families = tuple(args.families or CASE_FAMILIES)
    state: dict = {"start": time.time(), "cases": 0}
    counts = {f: {"cases": 0, "failures": 0} for f in families}
    failures: list = []
    out = Path(args.out)

    def dump(done: bool) -> None:
        out.write_text(
            json.dumps(
                {
                    "mode": "adversarial",
                    "cases_checked": state["cases"],
                    "n_failures": len(failures),
                    "per_family": counts,
                    "failures": failures[:40],
                    "elapsed_s": time.time() - state["start"],
                    "finished": done,
                    "command": "python benchmarks/soak_certify.py --adversarial "
                    f"--cases {args.cases} --families {' '.join(families)}",
                },
                indent=2,
                default=str,
            )
        )

    @settings(
        max_examples=args.cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate],  # count cases; no shrinking inside the soak
    )
    @given(adversarial_cases(families))
    def check(case):
        problems = check_case(case, sb.certify)
        state["cases"] += 1
        counts[case.family]["cases"] += 1
        if problems:
            counts[case.family]["failures"] += 1
            failures.append({"problems": problems, **case.describe()})
        if state["cases"] % 200 == 0:
            dump(False)

    check()
    dump(True)
    print(json.dumps({k: v for k, v in json.loads(out.read_text()).items() if k != "failures"}))
    return 1 if failures else 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--adversarial", action="store_true", help="draw the adversarial families of issue 12"
    )
    parser.add_argument("--families", nargs="*", help="with --adversarial: these families only")
    args = parser.parse_args(argv)
    if args.adversarial:
        args.out = args.out or "benchmarks/results/soak_certify_adversarial.json"
        return adversarial(args)
    args.out = args.out or "benchmarks/results/soak_certify.json"
    state = {"cases": 0, "failures": [], "start": time.time(), "converged": 0}
    out = Path(args.out)

    def dump(done: bool) -> None:
        out.write_text(
            json.dumps(
                {
                    "cases_checked": state["cases"],
                    "failures": state["failures"][:20],
                    "n_failures": len(state["failures"]),
                    "converged": state["converged"],
                    "elapsed_s": time.time() - state["start"],
                    "finished": done,
                    "command": f"python benchmarks/soak_certify.py --cases {args.cases}",
                },
                indent=2,
            )
        )

    @settings(
        max_examples=args.cases,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(layers(max_channels=3, max_size=7), st.sampled_from([1e-2, 1e-4, 1e-8]))
    def check(layer, rtol):
        kernel, spec = layer
        cert = sb.certify(kernel, spec, rtol=rtol)
        exact = exact_norm(kernel, spec)
        ok = cert.lower <= exact <= cert.upper and (not cert.converged or cert.rel_gap <= rtol)
        try:
            cert.verify()
        except AssertionError:
            ok = False
        state["cases"] += 1
        state["converged"] += cert.converged
        if not ok:
            state["failures"].append(
                {
                    "spec": spec.to_dict(),
                    "kernel": kernel.tolist(),
                    "lower": cert.lower,
                    "upper": cert.upper,
                    "exact": exact,
                }
            )
        if state["cases"] % 1000 == 0:
            dump(False)

    check()
    dump(True)
    print(json.dumps(json.loads(out.read_text()), indent=2)[:2000])
    return 1 if state["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
