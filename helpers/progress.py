"""Progress you can see in Jupyter and read in a log.

A live bar (tqdm: a widget in Jupyter, a text bar on a terminal) plus plain text lines at a steady
cadence: every ``every`` steps (a tenth of the total by default) and at least every ``seconds``
(60). The lines are what ``run-notebooks --log-output``, ``nohup`` and a redirected log show: papermill
streams a kernel's printed text but not a widget, and a bar's carriage returns are noise in a file.

    [train] 120/300 (40%)  total_loss 1.235  loss_mask 0.4121 ...  lr 0.015  0.78 s/it  ETA 2m20s

Values in the line are the latest step's, losses to 4 significant digits and the learning rate to 6;
the exact values are in ``metrics.json``. The bar is left out where nobody watches it (no terminal,
no Jupyter).
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from typing import Any, TextIO

DEFAULT_LINES = 10  # lines over a whole run (one per tenth), besides the at-least-every-`seconds` ones
DEFAULT_SECONDS = 60.0


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (JupyterLab, Colab, papermill)."""
    shell = sys.modules.get("IPython") and getattr(sys.modules["IPython"], "get_ipython", lambda: None)()
    return bool(shell) and type(shell).__name__ == "ZMQInteractiveShell" or "google.colab" in sys.modules


def _bar_wanted(stream: TextIO) -> bool:
    if in_jupyter():
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """``45s``, ``2m20s``, ``3h05m``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _value(name: str, value: Any) -> str:
    if isinstance(value, float):
        # a learning rate to 6 significant digits (0.00025 stays 0.00025); losses to 4
        return f"{name} {value:.6g}" if name == "lr" else f"{name} {value:.4g}"
    return f"{name} {value}"


class Progress:
    """Counts steps towards ``total``; draws the bar and prints the lines.

    ``Progress(300, "train", initial=120)`` for a resumed run; ``update(**values)`` after each
    step, with the values to show (losses, lr); ``close()`` (or a ``with`` block) at the end.
    """

    def __init__(self, total: int, desc: str, initial: int = 0, unit: str = "it", every: int | None = None,
                 seconds: float = DEFAULT_SECONDS, enabled: bool = True, bar: bool | None = None,
                 stream: TextIO | None = None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.n = self.start = int(initial)
        self.every = max(1, every if every else math.ceil(max(self.total, 1) / DEFAULT_LINES))
        self.seconds = seconds
        self.enabled = enabled
        self.stream = stream or sys.stdout
        self._times: deque[float] = deque(maxlen=50)
        self._last_tick = self._last_line = self._started = time.perf_counter()
        self._values: dict[str, Any] = {}
        self.lines: list[str] = []
        self._bar = None
        if enabled and (bar if bar is not None else _bar_wanted(sys.stderr)):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, initial=self.n, desc=desc, unit=unit, leave=True)

    def update(self, n: int = 1, **values: Any) -> None:
        now = time.perf_counter()
        self._times.append((now - self._last_tick) / max(n, 1))
        self._last_tick = now
        self.n += n
        self._values = values
        if self._bar is not None:
            shown = {k: f"{v:.4g}" if isinstance(v, float) and k != "lr" else v for k, v in values.items()
                     if k in ("total_loss", "lr")}
            self._bar.set_postfix(shown, refresh=False)
            self._bar.update(n)
        if not self.enabled:
            return
        due = (self.n - self.start == n) or self.n % self.every == 0 or self.n >= self.total
        if due or now - self._last_line >= self.seconds:
            self.line()

    def seconds_per_step(self) -> float:
        return sum(self._times) / len(self._times) if self._times else float("nan")

    def line(self, extra: str = "") -> str:
        """Print (and return) the status line now."""
        rate = self.seconds_per_step()
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        parts = [f"[{self.desc}] {self.n}/{self.total}{pct}"]
        order = sorted(self._values, key=lambda k: (k != "total_loss", k == "lr"))
        parts += [_value(k, self._values[k]) for k in order]
        if math.isfinite(rate):
            parts.append(f"{rate:.3g} s/{self.unit}")
            parts.append(f"ETA {format_duration(rate * max(self.total - self.n, 0))}")
        if extra:
            parts.append(extra)
        text = "  ".join(parts)
        self._last_line = time.perf_counter()
        self.lines.append(text)
        if self.enabled:
            self._print(text)
        return text

    def note(self, text: str) -> None:
        """A line of its own (e.g. evaluation results), printed cleanly around the bar."""
        if self.enabled:
            self._print(f"[{self.desc}] {text}")

    def _print(self, text: str) -> None:
        if self._bar is not None:
            from tqdm.auto import tqdm

            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)
        try:
            self.stream.flush()
        except (AttributeError, ValueError):
            pass

    def close(self) -> None:
        """Close the bar; a run stopped short of ``total`` gets a last line saying where it stopped
        (a finished one already printed its ``total/total`` line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self.enabled and self.start < self.n < self.total and self.lines and not self.lines[-1].startswith(
                f"[{self.desc}] {self.n}/"):
            self.line(f"stopped after {format_duration(time.perf_counter() - self._started)}")

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
