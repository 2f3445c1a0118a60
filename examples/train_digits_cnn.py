"""Train the bundled example network (:func:`specbound.models.digits_cnn`) on scikit-learn's
8x8 digits, offline on CPU, and save its weights for ``specbound audit``.

A plain CNN (conv + BatchNorm, a residual block, a strided conv, average pooling, a linear
head), trained with Adam and cross-entropy; nothing constrains its Lipschitz constant, so the
audit of it shows what :func:`specbound.audit` reports for an ordinary network. The split is
scikit-learn's ``train_test_split(test_size=0.25, random_state=seed, stratify=y)`` of the 1797
images, pixels scaled to ``[0, 1]``.

Usage::

    python examples/train_digits_cnn.py --out specbound/data      # the bundled weights
    python examples/train_digits_cnn.py --quick --out /tmp/digits  # a few epochs, for CI

Writes ``digits_cnn.pt`` (a float32 ``state_dict``, loaded with ``weights_only=True``) and
``digits_cnn.json`` (accuracy, seed, epochs, torch version) into ``--out``.
Needs scikit-learn (the ``examples`` extra).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from specbound.models import DIGITS_INFO, DIGITS_WEIGHTS, digits_cnn


def load_data(seed: int) -> tuple[torch.Tensor, ...]:
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise SystemExit("this example needs scikit-learn: pip install scikit-learn") from exc
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return tuple(torch.from_numpy(a) for a in (x_tr, y_tr, x_te, y_te))


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return int((model(x).argmax(1) == y).sum()) / len(y)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--quick", action="store_true", help="3 epochs (CI)")
    parser.add_argument("--epochs", type=int, default=None, help="default 40 (3 with --quick)")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 40)

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    x_tr, y_tr, x_te, y_te = load_data(args.seed)
    model = digits_cnn()
    opt = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        if epoch == epochs - 1 or (epoch + 1) % 10 == 0:
            print(
                f"epoch {epoch + 1:3d}  loss {loss.item():.4f}  "
                f"test accuracy {accuracy(model, x_te, y_te):.4f}"
            )
    model.eval()
    info = {
        "architecture": "digits_cnn",
        "input_shape": [1, 8, 8],
        "dataset": "sklearn.datasets.load_digits, pixels / 16, "
        f"train_test_split(test_size=0.25, random_state={args.seed}, stratify=y)",
        "train_size": len(x_tr),
        "test_size": len(x_te),
        "train_accuracy": accuracy(model, x_tr, y_tr),
        "test_accuracy": accuracy(model, x_te, y_te),
        "epochs": epochs,
        "optimizer": f"Adam lr={args.lr} weight_decay={args.weight_decay}, cosine schedule, "
        f"batch {args.batch_size}",
        "seed": args.seed,
        "torch": torch.__version__,
        "train_seconds": round(time.perf_counter() - start, 2),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(torch.float32).contiguous()
        for k, v in model.state_dict().items()
        if v.is_floating_point()
    }
    state.update({k: v for k, v in model.state_dict().items() if not v.is_floating_point()})
    torch.save(state, args.out / DIGITS_WEIGHTS)
    (args.out / DIGITS_INFO).write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps(info, indent=2))
    return info


if __name__ == "__main__":
    main()
