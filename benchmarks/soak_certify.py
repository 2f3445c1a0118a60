"""Long property run of ``certify`` against the exact float64 operator (issue 4).

Usage::

    python benchmarks/soak_certify.py --cases 100000 --out benchmarks/results/soak_certify.json

Draws layers from ``specbound.testing.layers`` (every padding mode, pads up to ``d(k-1)``,
strides, dilations, groups, rectangular kernels and inputs, the adversarial kernel families)
and asserts ``lower <= exact <= upper`` with bare comparisons, ``rel_gap <= rtol`` when
converged, and ``verify()``. Progress (cases checked, failures, elapsed) is written to ``--out``
every 1000 cases, so an interrupted run still reports what it checked.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specbound as sb
from specbound.operators import exact_norm
from specbound.testing import layers


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--out", default="benchmarks/results/soak_certify.json")
    args = parser.parse_args(argv)
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
        cert = sb.certify(
            kernel,
            spec.padding,
            input_size=spec.input_size,
            pad=spec.pad,
            stride=spec.stride,
            dilation=spec.dilation,
            groups=spec.groups,
            rtol=rtol,
        )
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
