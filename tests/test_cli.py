"""The command line, in process (``cli.main(argv)``), and one subprocess smoke test.

Every command: its output against the library, ``--json`` (with versions and the command line)
and its errors (one line on stderr, exit status 2, for every kind of bad argument).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import specbound as sb
from specbound import cli
from specbound.cli import build_parser, example_kernel

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = sb.ConvSpec("zeros", "same", (12, 12))


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys, *args: str) -> str:
    code, out, err = run(capsys, *args)
    assert code == 0, err
    return out


def test_smoke_subprocess_without_torch():
    """The installed entry point runs; ``--version`` and ``--help`` import neither torch nor
    scipy (what made them take seconds)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for flag in ("--version", "--help"):
        proc = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "specbound", flag],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines()}
        assert "torch" not in imported and "scipy" not in imported
    assert proc.stdout.startswith("usage: specbound")
    proc = subprocess.run(
        [sys.executable, "-m", "specbound", "exact", "--example", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["norm"] == sb.operators.exact_norm(example_kernel(), EXAMPLE)


def test_version(capsys):
    assert ok(capsys, "--version").strip() == f"specbound {sb.__version__}"


def test_exact_example_json_matches_library(capsys):
    out = json.loads(ok(capsys, "exact", "--example", "--json"))
    assert out["kind"] == "exact" and out["route"] == "dense"
    assert out["norm"] == sb.operators.exact_norm(example_kernel(), EXAMPLE)
    assert out["spec"]["input_size"] == [12, 12]


def test_exact_text_output_names_route_and_time(capsys):
    text = ok(capsys, "exact", "--example", "--padding", "circular")
    assert "exact spectral norm" in text and "circulant" in text and "ms" in text
    assert "input=12x12" in text  # the example states its input size


def test_exact_from_npy_and_pt(tmp_path, capsys):
    k = np.random.default_rng(0).standard_normal((3, 2, 3, 3))
    np.save(tmp_path / "k.npy", k)
    torch.save({"conv.weight": torch.from_numpy(k), "conv.bias": torch.zeros(3)}, tmp_path / "k.pt")
    torch.save(torch.from_numpy(k).float(), tmp_path / "k32.pt")
    spec = sb.ConvSpec("reflect", (1, 2), (5, 6), stride=(2, 1))
    expected = sb.operators.exact_norm(k, spec)
    common = ["--padding", "reflect", "--pad", "1,2", "--input-size", "5", "6"]
    common += ["--stride", "2", "1", "--json"]
    for path in ("k.npy", "k.pt"):
        out = json.loads(ok(capsys, "exact", str(tmp_path / path), *common))
        assert out["norm"] == expected
    # a float32 tensor is widened exactly: the norm of the float32 values
    out = json.loads(ok(capsys, "exact", str(tmp_path / "k32.pt"), *common))
    assert out["norm"] == sb.operators.exact_norm(k.astype(np.float32).astype(np.float64), spec)


def test_complex_kernels_are_refused(tmp_path, capsys):
    """A complex kernel used to lose its imaginary part (norm 9 certified for a norm of 20.1)."""
    k = torch.zeros(1, 1, 3, 3, dtype=torch.complex128)
    k[0, 0, 1, 1] = 9 + 18j
    torch.save(k, tmp_path / "c.pt")
    np.save(tmp_path / "c.npy", k.numpy())
    for name in ("c.pt", "c.npy"):
        for command in ("exact", "certify"):
            code, out, err = run(capsys, command, str(tmp_path / name), "--input-size", "3")
            assert code == 2 and not out
            assert err.startswith(f"specbound {command}: error: ") and "complex" in err


BAD_ARGUMENTS = [
    (["exact", "missing.npy", "--input-size", "4"], "does not exist"),
    (["exact", "--example", "--padding", "reflect", "--input-size", "1"], "reflect"),
    (["exact", "--example", "--input-size", "1", "2", "3"], "one or two integers (H [W])"),
    (["exact", "--example", "--input-size", "0"], "positive integer"),
    (["exact", "--example", "--input-size", "x"], "positive integer"),
    (["exact", "--example", "--stride", "1", "1", "1"], "one or two integers (S [S])"),
    (["exact", "--example", "--dilation", "-1"], "positive integer"),
    (["exact", "--example", "--groups", "3"], "groups=3 must divide"),
    (["exact", "--example", "--groups", "0"], "positive integer"),
    (["exact", "--example", "--pad", "1,2,3"], "'left,right,top,bottom'"),
    (["exact", "--example", "--pad", "-1"], "P >= 0"),
    (["exact", "--example", "--padding", "mirror"], "invalid choice"),
    (["exact", "k.npy", "--example"], "not allowed with"),
    (["exact"], "required"),
    (["exact", "--example", "--bogus"], "unrecognized arguments: --bogus"),
    (["certify", "--example", "--rtol", "0"], "(0, 1)"),
    (["certify", "--example", "--rtol", "1.5"], "(0, 1)"),
    (["certify", "--example", "--rtol", "nan"], "(0, 1)"),
    (["certify", "--example", "--max-seconds", "-1"], "finite number > 0"),
    (["certify", "--example", "--max-seconds", "5s"], "finite number > 0"),
    (["certify", "--example", "--device", "banana"], "not a torch device"),
    (["certify", "--example", "--padding", "reflect", "--input-size", "1"], "reflect"),
    (["audit", "--rtol", "-1"], "(0, 1)"),
    (["audit", "--device", "banana"], "not a torch device"),
    (["audit", "--max-seconds-per-layer", "0"], "finite number > 0"),
    (["audit", "--input-shape", "3", "32", "32"], "needs a MODEL file"),
    (["audit", "--input-shape", "3", "-2"], "positive integer"),
    (["methods", "--bogus"], "unrecognized"),
    (["frobnicate"], "invalid choice"),
    ([], "required: COMMAND"),
]


@pytest.mark.parametrize("args,message", BAD_ARGUMENTS, ids=[" ".join(a) for a, _ in BAD_ARGUMENTS])
def test_every_bad_argument_is_one_line_and_exit_2(args, message, capsys):
    code, out, err = run(capsys, *args)
    assert code == 2 and not out
    lines = err.splitlines()
    assert len(lines) == 1, err
    command = f"specbound {args[0]}" if args and args[0] != "frobnicate" else "specbound"
    assert lines[0].startswith(f"{command}: error: ") and message in lines[0], err


def test_device_not_on_this_build(capsys):
    """``--device cuda`` without CUDA: one line, exit 2 (before any work)."""
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    for command in (["certify", "--example"], ["audit"]):
        code, out, err = run(capsys, *command, "--device", "cuda")
        assert code == 2 and not out and len(err.splitlines()) == 1
        assert "not available here" in err


def test_malformed_files(tmp_path, capsys):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    torch.save({"a": torch.ones(2, 2, 3, 3), "b": torch.ones(2, 2, 3, 3)}, tmp_path / "two.pt")
    torch.save({"a": torch.ones(2, 2, 3, 3)}, tmp_path / "one.pt")
    cases = (("obj.npy", "numeric"), ("bad.pt", "weights_only"), ("two.pt", "--key"))
    for name, message in cases:
        code, _, err = run(capsys, "exact", str(tmp_path / name), "--input-size", "4")
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
    code, _, err = run(capsys, "exact", str(tmp_path / "one.pt"), "--key", "zz")
    assert code == 2 and "--key 'zz' is not in" in err


def test_json_records_versions_and_command(capsys):
    for argv in (
        ["exact", "--example", "--json"],
        ["certify", "--example", "--json", "--rtol", "0.5"],
        ["methods", "--json"],
    ):
        out = json.loads(ok(capsys, *argv))
        assert out["command"] == ["specbound", *argv]
        assert out["versions"] == {
            "specbound": sb.__version__,
            "torch": torch.__version__,
            "numpy": np.__version__,
        }


def test_methods_text_and_json_show_the_same_columns(capsys):
    rows = json.loads(ok(capsys, "methods", "--json"))["methods"]
    assert [r["name"] for r in rows] == [m.name for m in sb.bounds.methods()]
    assert all(r["kind"] in sb.bounds.KINDS for r in rows)
    text = ok(capsys, "methods").splitlines()
    titles = {key: title for key, title, _ in cli.METHOD_COLUMNS}
    assert set(rows[0]) == {*titles, "reference"}  # every JSON key has a text column
    for title in titles.values():
        assert title in text[0]
    body = text[2:]
    for row, line, ref in zip(rows, body[0::2], body[1::2], strict=True):
        assert line.split()[0] == row["name"] and row["kind"] in line
        assert ("yes" if row["dilation"] else "no") in line.split()
        assert ref.strip() == f"reference: {row['reference']}"


def test_certify_example_brackets_the_exact_norm(capsys):
    out = json.loads(ok(capsys, "certify", "--example", "--rtol", "1e-6", "--json"))
    exact = sb.operators.exact_norm(example_kernel(), EXAMPLE)
    assert out["lower"] <= exact
    assert exact <= out["upper"]
    assert out["converged"] and out["rel_gap"] <= 1e-6
    text = ok(capsys, "certify", "--example", "--padding", "circular")
    assert "upper" in text and "converged" in text and "input=12x12" in text
    # reflect padding at 8x8: the bracket holds against the float64 operator
    argv = ["certify", "--example", "--json", "--input-size", "8", "--padding", "reflect"]
    every = json.loads(ok(capsys, *argv, "--rtol", "1e-4"))
    truth = sb.operators.exact_norm(example_kernel(), sb.ConvSpec("reflect", "same", (8, 8)))
    assert every["lower"] <= truth
    assert truth <= every["upper"]
    assert every["spec"]["padding"] == "reflect" and every["spec"]["input_size"] == [8, 8]


def test_certify_on_cpu_device_and_time_budget(capsys):
    out = json.loads(
        ok(capsys, "certify", "--example", "--device", "cpu", "--max-seconds", "30", "--json")
    )
    assert out["device"].startswith("cpu")
    exact = sb.operators.exact_norm(example_kernel(), EXAMPLE)
    assert out["lower"] <= exact
    assert exact <= out["upper"]


# -- the README's synopsis is the parser's ---------------------------------------------------


def readme_synopsis() -> dict[str, str]:
    """README's command-line block, one entry per ``specbound`` command (continuation lines
    joined)."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## Command line", 1)[1].split("```", 2)[1]
    commands: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        match = re.match(r"specbound (\w+)", line)
        if match:
            current = match.group(1)
            commands[current] = line
        elif line.startswith(" ") and current is not None:
            commands[current] += " " + line.strip()
        else:
            current = None
    return commands


def subcommands() -> dict[str, object]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a.choices, dict))
    return dict(action.choices)


def test_readme_synopsis_matches_the_parser():
    synopsis = readme_synopsis()
    parsers = subcommands()
    assert set(synopsis) == set(parsers)
    for name, sub in parsers.items():
        line = synopsis[name]
        options = {
            flag
            for action in sub._actions
            for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"
        }
        assert set(re.findall(r"--[a-z][a-z-]*", line)) == options, name
        for action in sub._actions:
            shown = getattr(action, "display", None) or action.metavar
            if action.option_strings and shown and not action.choices:
                assert f"{action.option_strings[-1]} {shown}" in line, (name, shown)
