"""A ProgressBar with comfy.utils.ProgressBar's interface, for the headless runtime.

Each update checks the interrupt flag (as ComfyUI's progress hook does), reports a
`progress` event, and optionally draws a tqdm bar in the terminal."""
from __future__ import annotations

from typing import Any, Callable, Optional

from .headless_host import HEADLESS

ProgressCallback = Callable[[int, int, Optional[str], Any], None]
# Values a node's event may carry that its bar shows as tqdm's postfix (the trainer's
# hypernet.train_step event carries both, a few times a second).
POSTFIX_KEYS = ("loss", "lr")


class ProgressBar:
    """`update(n)` advances by n; `update_absolute(value, total, preview)` sets the position."""

    def __init__(self, total: int, node_id: Optional[str] = None, on_update: Optional[ProgressCallback] = None,
                 display: bool = False, description: Optional[str] = None):
        self.total = int(total)
        self.current = 0
        self.node_id = node_id
        self._on_update = on_update
        self._bar = None
        if display:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.total, desc=description, leave=False, dynamic_ncols=True)

    def update(self, value: int = 1) -> None:
        self.update_absolute(self.current + value)

    def update_absolute(self, value: int, total: Optional[int] = None, preview: Any = None) -> None:
        HEADLESS.throw_if_interrupted()
        if total is not None:
            self.total = int(total)
            if self._bar is not None:
                self._bar.total = self.total
        value = int(value)
        if self._bar is not None:
            self._bar.update(value - self.current)
        self.current = value
        if self._on_update is not None:
            self._on_update(self.current, self.total, self.node_id, preview)

    def set_postfix(self, values: dict[str, float]) -> None:
        """Show `values` after the bar (tqdm's own postfix, e.g. `loss=0.123, lr=5e-4`)."""
        if self._bar is not None:
            self._bar.set_postfix(values)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ProgressFactory:
    """What the executor installs as `HEADLESS.progress_factory`: makes bars, closes them per node."""

    def __init__(self, on_update: Optional[ProgressCallback] = None, display: bool = False,
                 describe: Optional[Callable[[Optional[str]], str]] = None):
        self._on_update = on_update
        self._display = display
        self._describe = describe
        self._open: list[ProgressBar] = []

    def __call__(self, total: int, node_id: Optional[str] = None) -> ProgressBar:
        description = self._describe(node_id) if self._describe else None
        bar = ProgressBar(total, node_id, self._on_update, self._display, description)
        self._open.append(bar)
        return bar

    def note_event(self, data: dict) -> None:
        """Show an event's loss and learning rate on its node's open bars."""
        values = {key: data[key] for key in POSTFIX_KEYS if isinstance(data.get(key), (int, float))}
        if values:
            for bar in self._open:
                if bar.node_id == data.get("node"):
                    bar.set_postfix(values)

    def close_all(self) -> None:
        for bar in self._open:
            bar.close()
        self._open.clear()
