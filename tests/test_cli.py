"""The command line, run as a user runs it (subprocesses), including --json and errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import specbound as sb
from specbound.cli import example_kernel


def run(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "specbound", *args], capture_output=True, text=True, timeout=120
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_exact_example_json_matches_library():
    out = json.loads(run("exact", "--example", "--json").stdout)
    spec = sb.ConvSpec("zeros", "same", (12, 12))
    assert out["kind"] == "exact" and out["route"] == "dense"
    assert out["norm"] == sb.operators.exact_norm(example_kernel(), spec)
    assert out["spec"]["input_size"] == [12, 12]


def test_exact_text_output_names_route_and_time():
    text = run("exact", "--example", "--padding", "circular").stdout
    assert "exact spectral norm" in text and "circulant" in text and "ms" in text


def test_exact_from_npy_and_pt(tmp_path):
    k = np.random.default_rng(0).standard_normal((3, 2, 3, 3))
    np.save(tmp_path / "k.npy", k)
    torch.save({"conv.weight": torch.from_numpy(k), "conv.bias": torch.zeros(3)}, tmp_path / "k.pt")
    spec = sb.ConvSpec("reflect", (1, 2), (5, 6), stride=(2, 1))
    expected = sb.operators.exact_norm(k, spec)
    common = [
        "--padding",
        "reflect",
        "--pad",
        "1,2",
        "--input-size",
        "5",
        "6",
        "--stride",
        "2",
        "1",
        "--json",
    ]
    for path in ("k.npy", "k.pt"):
        out = json.loads(run("exact", str(tmp_path / path), *common).stdout)
        assert out["norm"] == expected


@pytest.mark.parametrize(
    "args,message",
    [
        (["exact", "missing.npy", "--input-size", "4"], "does not exist"),
        (["exact", "--example", "--padding", "reflect", "--input-size", "1"], "reflect"),
        (["exact", "--example", "--input-size", "1", "2", "3"], "one or two"),
        (["exact", "--example", "--groups", "3"], "groups=3 must divide"),
    ],
)
def test_errors_are_clear_and_exit_2(args, message):
    proc = run(*args, check=False)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_malformed_files(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    torch.save({"a": torch.ones(2, 2, 3, 3), "b": torch.ones(2, 2, 3, 3)}, tmp_path / "two.pt")
    for name, message in (("obj.npy", "numeric"), ("bad.pt", "weights_only"), ("two.pt", "--key")):
        proc = run("exact", str(tmp_path / name), "--input-size", "4", check=False)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_methods_lists_the_registry():
    rows = json.loads(run("methods", "--json").stdout)
    assert [r["name"] for r in rows] == [m.name for m in sb.bounds.methods()]
    assert all(r["kind"] in sb.bounds.KINDS for r in rows)


def test_certify_example_and_json(tmp_path):
    out = json.loads(run("certify", "--example", "--rtol", "1e-6", "--json").stdout)
    exact = sb.operators.exact_norm(example_kernel(), sb.ConvSpec("zeros", "same", (12, 12)))
    assert out["lower"] <= exact <= out["upper"]
    assert out["converged"] and out["rel_gap"] <= 1e-6
    text = run("certify", "--example", "--padding", "circular").stdout
    assert "upper" in text and "converged" in text
    every = json.loads(
        run(
            "certify",
            "--example",
            "--json",
            "--input-size",
            "8",
            "--padding",
            "reflect",
            "--rtol",
            "1e-4",
        ).stdout
    )
    assert every["lower"] <= every["upper"]


def test_certify_error_is_clear():
    proc = run("certify", "--example", "--padding", "reflect", "--input-size", "1", check=False)
    assert proc.returncode == 2 and "reflect" in proc.stderr
