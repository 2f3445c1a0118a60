"""Train a small certified 1-Lipschitz CNN on scikit-learn's bundled digits (8x8), on CPU.

The network is built from ``specbound.layers`` (AOL, spectral rescaling, BCOP with a
space-to-depth stride, an SLL residual block, AOL/SR linear layers) and MaxMin activations.
Every layer is 1-Lipschitz by construction; after training the script **certifies** the
Lipschitz constant ``L`` of the whole network as the product of per-layer certified upper
bounds from :func:`specbound.certify` at the input size each layer sees (a rigorous bracket of
the float64 value of each kernel; MaxMin and Flatten are 1-Lipschitz / isometric). An SLL block
with certified ``u >= ||T^{-1/2} C||`` is ``max(1, 2u^2 - 1)``-Lipschitz. A test point is certified
at L2 radius ``eps`` when it is classified correctly and ``margin > sqrt(2) * L * eps``
(``margin`` = top logit minus runner-up; Tsuzuku et al. 2018, as in the AOL paper), computed
by :func:`specbound.metrics.certified_accuracy`.

Note: the certificate covers the real-number network with the trained float32 weights
(exactly representable in float64); the float32 rounding of the forward pass itself is not
included.

Usage::

    python examples/train_lipschitz_cnn.py --out digits_lipschitz.pt
    python examples/train_lipschitz_cnn.py --quick --out /tmp/model.pt     # < 60 s, for CI

Needs scikit-learn (the ``examples`` extra): ``pip install scikit-learn``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from specbound.layers import (
    AOLConv2d,
    AOLLinear,
    BCOPConv2d,
    ConstrainedConv2d,
    MaxMin,
    RescaledLinear,
    SLLConv2d,
    SRConv2d,
    SRLinear,
)
from specbound.metrics import certified_accuracy

RADII = (0.1, 0.25, 0.5, 1.0)


def load_data(seed: int) -> tuple[torch.Tensor, ...]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit(
            "this example needs scikit-learn (bundled digits data set): pip install scikit-learn"
        ) from exc
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]  # pixels in [0, 1], (N, 1, 8, 8)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return tuple(torch.from_numpy(a) for a in (x_tr, y_tr, x_te, y_te))


def build_model(width: int = 16) -> nn.Sequential:
    """8x8 -> 8x8 -> 4x4 -> residual -> dense; every block 1-Lipschitz."""
    return nn.Sequential(
        AOLConv2d(1, width, 3),  # zero "same" padding
        MaxMin(),
        SRConv2d(width, 2 * width, 3, n_iter=2),
        MaxMin(),
        BCOPConv2d(2 * width, 4 * width, 4, stride=2, padding_mode="zeros"),  # 8x8 -> 4x4
        MaxMin(),
        SLLConv2d(4 * width, 4 * width, 3),
        nn.Flatten(),
        AOLLinear(4 * width * 16, 128),
        MaxMin(),
        SRLinear(128, 10, n_iter=2),
    )


def offset_cross_entropy(scores: torch.Tensor, y: torch.Tensor, offset: float, temperature: float):
    """Prach & Lampert 2022, Sec. 5: t * CE((s - u * onehot(y)) / t, y)."""
    shifted = scores - offset * F.one_hot(y, scores.shape[1]).to(scores.dtype)
    return temperature * F.cross_entropy(shifted / temperature, y)


def certified_lipschitz(model: nn.Sequential, input_shape: tuple[int, ...]) -> tuple[float, list]:
    """Product of the per-layer certified upper bounds (``specbound.certify``)."""
    total, rows = 1.0, []
    x = torch.zeros(1, *input_shape)
    with torch.no_grad():
        for layer in model:
            size = tuple(x.shape[-2:])
            if isinstance(layer, ConstrainedConv2d):
                cert = layer.certify(input_size=size)
                factor = cert.upper
            elif isinstance(layer, SLLConv2d):
                cert = layer.certify(input_size=size)
                factor = max(1.0, 2.0 * cert.upper**2 - 1.0)
            elif isinstance(layer, RescaledLinear):
                cert = layer.certify()
                factor = cert.upper
                size = (layer.in_features,)
            elif isinstance(layer, (MaxMin, nn.Flatten)):
                x = layer(x)
                continue
            else:  # pragma: no cover - the model above has no other layer
                raise TypeError(f"no certificate for {type(layer).__name__}")
            name = type(layer).__name__.removeprefix("Parametrized")
            rows.append((name, size, cert.lower, cert.upper, factor))
            total *= factor
            x = layer(x)
    return total, rows


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lipschitz: float) -> dict:
    """Clean and certified accuracy (:mod:`specbound.metrics`: radius ``margin / (sqrt(2) L)``,
    certified at ``eps`` when the radius exceeds ``eps``)."""
    model.eval()
    with torch.no_grad():
        scores = model(x)
    result = {"clean_accuracy": float((scores.argmax(dim=1) == y).float().mean())}
    accuracy = certified_accuracy(scores, y, lipschitz, RADII)
    for eps, acc in zip(RADII, accuracy, strict=True):
        result[f"certified_accuracy@{eps}"] = float(acc)
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="where to save the state_dict")
    parser.add_argument("--quick", action="store_true", help="a few epochs, for CI (< 60 s)")
    parser.add_argument("--epochs", type=int, default=None, help="default 30, or 4 with --quick")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--offset", type=float, default=math.sqrt(2) * 0.5, help="loss offset u")
    parser.add_argument("--temperature", type=float, default=0.25, help="loss temperature t")
    parser.add_argument("--width", type=int, default=None, help="default 16, or 8 with --quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: the model is tiny)"
    )
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (4 if args.quick else 30)
    width = args.width if args.width is not None else (8 if args.quick else 16)
    torch.set_num_threads(args.threads)

    torch.manual_seed(args.seed)
    start = time.perf_counter()
    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    if args.quick:
        x_tr, y_tr = x_tr[:600], y_tr[:600]
    device = torch.device(args.device)
    model = build_model(width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=epochs * math.ceil(len(x_tr) / args.batch_size)
    )
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(x_tr), generator=gen)
        total = 0.0
        for i in range(0, len(x_tr), args.batch_size):
            idx = perm[i : i + args.batch_size]
            xb, yb = x_tr[idx].to(device), y_tr[idx].to(device)
            loss = offset_cross_entropy(model(xb), yb, args.offset, args.temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if epoch % max(1, epochs // 10) == 0 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}/{epochs}  loss {total / len(x_tr):.4f}", flush=True)
    train_time = time.perf_counter() - start

    model.eval()
    lipschitz, rows = certified_lipschitz(model.cpu(), tuple(x_tr.shape[1:]))
    model.to(device)
    print("\nper-layer certificates (specbound.certify, rigorous float64 brackets):")
    for name, size, lower, upper, factor in rows:
        bracket = f"{lower:.6f} <= ||layer|| <= {upper:.6f}"
        print(f"  {name:10s} input {size!s:8s} {bracket}  (factor {factor:.6f})")
    print(f"certified Lipschitz constant of the network: L <= {lipschitz:.6f}")
    result = evaluate(model, x_te.to(device), y_te.to(device), lipschitz)
    result.update(
        {
            "lipschitz_upper": lipschitz,
            "epochs": epochs,
            "train_size": len(x_tr),
            "test_size": len(x_te),
            "seconds": round(time.perf_counter() - start, 1),
            "train_seconds": round(train_time, 1),
            "device": str(device),
            "quick": args.quick,
            "width": width,
        }
    )
    print(f"\nclean accuracy      {100 * result['clean_accuracy']:.1f}%")
    for eps in RADII:
        print(f"certified @ L2 {eps:<4}  {100 * result[f'certified_accuracy@{eps}']:.1f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(f"\nsaved state_dict to {args.out}")
    print("RESULT " + json.dumps(result))
    return result


if __name__ == "__main__":
    main()
