"""Progress display of the certified rows (tqdm when installed, plain lines otherwise).

Within a long layer the bar advances by the fraction of the layer's time budget spent (at most
95% of one layer), refreshed by a daemon thread twice a second, so that the display moves
while :func:`specbound.certify` works; without tqdm a line is printed every
:data:`HEARTBEAT_S` seconds of one layer.
"""

from __future__ import annotations

import sys
import threading
import time

TICK_S = 0.5
"""Refresh period of the bar within a layer."""

HEARTBEAT_S = 15.0
"""Without tqdm: seconds between the lines that say a layer is still running."""


class _Progress:
    def __init__(self, total: int, enabled: bool, title: str) -> None:
        self.bar, self.enabled, self.total, self.i = None, enabled, total, 0
        self.lock = threading.Lock()
        self.name, self.budget, self.started = "", None, 0.0
        self.running, self.beats = False, 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
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
                bar_format="{l_bar}{bar}| {n:.1f}/{total} layers [{elapsed}<{remaining}{postfix}]",
            )
        self.thread = threading.Thread(target=self._tick, name="specbound-audit-progress")
        self.thread.daemon = True
        self.thread.start()

    def begin(self, name: str, budget: float | None) -> None:
        """A layer starts; ``budget`` (seconds) scales the advance within it."""
        with self.lock:
            self.name, self.budget, self.started = name, budget, time.perf_counter()
            self.running, self.beats = True, 0
            if self.bar is not None:
                self.bar.set_postfix_str(name, refresh=False)

    def _fraction(self, now: float) -> float:
        spent = now - self.started
        scale = self.budget if self.budget else 60.0
        return min(0.95, spent / scale)

    def _tick(self) -> None:
        while not self.stop.wait(TICK_S):
            with self.lock:
                if not self.running:
                    continue
                now = time.perf_counter()
                if self.bar is not None:
                    self.bar.n = self.i + self._fraction(now)
                    self.bar.set_postfix_str(f"{self.name} {now - self.started:.0f} s")
                elif now - self.started >= HEARTBEAT_S * (self.beats + 1):
                    self.beats += 1
                    print(
                        f"[{self.i + 1}/{self.total}] {self.name}: "
                        f"{now - self.started:.0f} s so far",
                        file=sys.stderr,
                        flush=True,
                    )

    def step(self, name: str) -> None:
        """A layer is finished."""
        with self.lock:
            self.running = False
            self.i += 1
            if not self.enabled:
                return
            if self.bar is not None:
                self.bar.n = self.i
                self.bar.set_postfix_str(name, refresh=False)
                self.bar.refresh()
            else:
                print(f"[{self.i}/{self.total}] {name}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=2 * TICK_S)
        if self.bar is not None:
            self.bar.close()
