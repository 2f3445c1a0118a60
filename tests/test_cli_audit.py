"""``specbound audit`` in process (``cli.main``; tests/test_cli.py has the subprocess smoke test):
``--json``, text and its errors."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from specbound import cli
from specbound.models import DigitsCNN, bundled_digits_cnn

# the module, not the function: ``specbound.audit`` is re-exported as the function
A = importlib.import_module("specbound.audit")

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "specbound" / "data" / "digits_cnn.pt"


def run(*args: str, check: bool = True) -> SimpleNamespace:
    """``specbound audit ARGS --no-progress`` in process (``cli.main``), with its exit status
    and captured output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["audit", *args, "--no-progress"])
    proc = SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


class Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 2 * 2, 2)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(torch.flatten(nn.functional.avg_pool2d(y, 2), 1))


class Branchy(nn.Module):
    def forward(self, x):
        if bool(x.sum() > 0):
            return x
        return -x


class Sine(nn.Module):
    def forward(self, x):
        return torch.sin(x)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("models")
    model = Small().eval()
    torch.jit.script(model).save(str(folder / "small.pt"))
    torch.jit.script(Branchy()).save(str(folder / "branchy.pt"))
    torch.jit.script(Sine()).save(str(folder / "sine.pt"))
    torch.save(model, folder / "pickled.pt")  # a whole pickled model object
    torch.save(DigitsCNN(width=4).state_dict(), folder / "narrow.pt")
    (folder / "garbage.pt").write_bytes(b"this is not a model")
    (folder / "garbage.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    return folder, model


def test_default_audits_the_bundled_model_and_matches_the_library():
    out = json.loads(run("--json", "--rtol", "0.3").stdout)
    assert out["model"] == "DigitsCNN" and out["input_shape"] == [1, 8, 8]
    assert "bundled" in out["source"]
    assert out["versions"]["torch"] == torch.__version__
    assert out["command"] == ["specbound", "audit", "--json", "--rtol", "0.3", "--no-progress"]
    expected = A.audit(bundled_digits_cnn(), (1, 8, 8), rtol=0.3)
    assert out["upper"] == expected.upper
    assert [row["name"] for row in out["layers"]] == [row.name for row in expected.layers]


def same_weights(model: nn.Module, reference: nn.Module) -> bool:
    a, b = model.state_dict(), reference.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_state_dict_with_arch_loads_with_weights_only(tmp_path):
    model, shape, source = cli.load_model(str(WEIGHTS), "digits_cnn")
    assert isinstance(model, DigitsCNN) and not model.training
    assert shape == (1, 8, 8) and "as digits_cnn" in source
    assert same_weights(model, bundled_digits_cnn())
    # a training checkpoint that nests the state dict
    torch.save({"state_dict": bundled_digits_cnn().state_dict(), "epoch": 3}, tmp_path / "c.pt")
    model, _, _ = cli.load_model(str(tmp_path / "c.pt"), "digits_cnn")
    assert same_weights(model, bundled_digits_cnn())


def test_torchscript_file_text_and_json(scripted):
    folder, _ = scripted
    path = str(folder / "small.pt")
    out = json.loads(run(path, "--input-shape", "2", "4", "4", "--json").stdout)
    expected = A.audit(torch.jit.load(path), (2, 4, 4))
    assert out["upper"] == expected.upper
    assert out["lower"] is None and "nonlinear" in out["lower_note"]


def test_text_output(scripted, capsys):
    folder, _ = scripted
    assert cli.main(["audit", str(folder / "small.pt"), "--input-shape", "2", "4", "4"]) == 0
    text = capsys.readouterr().out
    assert "L2 Lipschitz upper bound" in text and "| # | layer |" in text and "TorchScript" in text


def test_malformed_file_is_a_clear_error(scripted):
    folder, _ = scripted
    proc = run(str(folder / "garbage.pt"), "--input-shape", "1", "4", "4", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "not a TorchScript archive" in proc.stderr and "--arch" in proc.stderr
    proc = run(str(folder / "garbage.pt"), "--arch", "digits_cnn", "--json", check=False)
    assert proc.returncode == 2 and "weights_only=True" in proc.stderr and not proc.stdout


def test_untraceable_model_is_a_clear_error(scripted):
    folder, _ = scripted
    proc = run(str(folder / "branchy.pt"), "--input-shape", "3", "--json", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("specbound audit: error: cannot trace")
    assert "if bool(x.sum() > 0)" in proc.stderr


@pytest.mark.parametrize(
    "args,message",
    [
        (["missing.pt", "--arch", "digits_cnn"], "does not exist"),
        (["{f}/pickled.pt", "--arch", "digits_cnn"], "Save model.state_dict()"),
        (["{f}/narrow.pt", "--arch", "digits_cnn"], "do not fit architecture 'digits_cnn'"),
        (["{f}/narrow.pt", "--arch", "vgg"], "unknown architecture 'vgg'"),
        (["{f}/small.pt"], "--input-shape C H W is required"),
        (["{f}/small.pt", "--input-shape", "2", "0", "4"], "positive"),
        (["{f}/sine.pt", "--input-shape", "4"], "no Lipschitz rule for node 'sin'"),
        (["{f}/garbage.safetensors"], "--arch"),
    ],
)
def test_errors_exit_2_with_a_message(scripted, capsys, args, message):
    folder, _ = scripted
    argv = ["audit", *(a.format(f=folder) for a in args), "--no-progress"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("specbound audit: error: ") and message in err, err


def test_safetensors(scripted, capsys, monkeypatch, tmp_path):
    folder, _ = scripted
    if importlib.util.find_spec("safetensors") is not None:
        from safetensors.torch import save_file

        path = tmp_path / "digits.safetensors"
        save_file(bundled_digits_cnn().state_dict(), str(path))
        model, shape, _ = cli.load_model(str(path), "digits_cnn")
        assert shape == (1, 8, 8) and same_weights(model, bundled_digits_cnn())
        bad = ["audit", str(folder / "garbage.safetensors"), "--arch", "digits_cnn"]
        assert cli.main(bad) == 2
        assert "cannot read" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "safetensors", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    assert cli.main(["audit", str(folder / "garbage.safetensors"), "--arch", "digits_cnn"]) == 2
    assert "pip install safetensors" in capsys.readouterr().err


def test_arch_without_file_audits_random_weights_with_a_time_budget(capsys):
    argv = ["audit", "--arch", "resnet18", "--input-shape", "3", "1", "1", "--json"]
    assert cli.main([*argv, "--rtol", "0.5", "--max-seconds-per-layer", "0.05"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "random weights" in out["source"] and out["model"] == "ResNet18"
    assert out["composition"]["sums"] == 8 and out["upper"] > 0


def test_rows_stream_before_the_report_and_budgets_are_options(capsys):
    """Text output: each layer's row is printed as it finishes, then the whole report (rtol
    0.01 by default, said so); ``--max-seconds`` bounds the run and marks the report partial."""
    argv = ["audit", "--arch", "resnet18", "--input-shape", "3", "2", "2", "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    streamed, report = out.split("model source:", 1)
    assert streamed.startswith("layers as they finish")
    assert "1. conv1+bn1 (Conv2d+BatchNorm2d): [" in streamed
    assert "rtol 0.01 (default)" in report and "PARTIAL" not in report
    assert cli.main([*argv, "--max-seconds", "1e-6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    budget = {"max_seconds": 1e-06, "max_seconds_per_layer": 120.0}
    assert out["partial"] and out["budget"] == budget
    convs = [r for r in out["layers"] if r["type"] in ("Conv2d+BatchNorm2d", "Linear")]
    assert len(convs) == 21 and all(r["kind"] == "bound" for r in convs)
    assert 0 < out["upper"] < math.inf
    assert cli.main([*argv, "--max-seconds", "-1"]) == 2
    assert "--max-seconds" in capsys.readouterr().err


def test_interrupt_prints_the_partial_report_and_exits_130(monkeypatch, capsys):
    """Ctrl-C during ``specbound audit``: the rows finished so far and the partial report are
    printed, and the exit status is the shell's 130 (not 0, which would read as success)."""

    def interrupt(self, row):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli._AuditStream, "__call__", interrupt)
    code = cli.main(["audit", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 130
    assert "PARTIAL" in out and "KeyboardInterrupt" in out
