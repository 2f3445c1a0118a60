"""Progress display of the certified rows (tqdm when installed, plain lines otherwise)."""

from __future__ import annotations

import sys


class _Progress:
    def __init__(self, total: int, enabled: bool, title: str) -> None:
        self.bar, self.enabled, self.total, self.i = None, enabled, total, 0
        if not enabled or total == 0:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            self.bar = tqdm(
                total=total,
                desc=title,
                unit="layer",
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
            )

    def step(self, name: str) -> None:
        self.i += 1
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=False)
            self.bar.update(1)
        else:
            print(f"[{self.i}/{self.total}] {name}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
