"""What `hypernet-studio run` prints while a workflow runs: one line per event.

Lines go through tqdm.write, so that they never land on a progress bar's line (tqdm clears the
bars, writes the line and redraws them). Each `wrote PATH` is said once per run, however often
the file is rewritten (a validation run's -best.pt is replaced at every new best); each warning
is said once per run, whether a node shows it (progress text) or the library logs it, and
`--quiet` leaves only the files written and errors."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from pathlib import Path
from typing import Iterator, Optional, TextIO

# The pack's root logger ("hypernet_studio" when installed; the custom-node folder's name in ComfyUI).
PACK_LOGGER = (__package__ or "hypernet_studio.runtime").rsplit(".", 1)[0]


def say(text: str, stream: Optional[TextIO] = None) -> None:
    """Print one line above any progress bar (stdout unless `stream`)."""
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stdout
    tqdm.write(text, file=stream)
    stream.flush()


class NodeReporter:
    """Prints one line per node as the executor's events arrive, and what the nodes report."""

    def __init__(self, prompt: dict, quiet: bool = False):
        self.prompt = prompt
        self.quiet = quiet
        self.started = time.perf_counter()
        self.node_started = self.started
        self.current: Optional[str] = None
        self.count = 0
        self.written: set[Path] = set()
        self.said: set[str] = set()  # notes and warnings already shown this run

    def __call__(self, event: str, data: dict) -> None:
        if event == "wrote":
            self.wrote(Path(data["path"]))
        elif self.quiet:
            return
        elif event == "progress_text":  # e.g. an interrupted trainer saying what it saved
            self.note(str(data.get("text")), indent="    ")
        elif event == "execution_cached" and data.get("nodes"):
            say(f"cached: {', '.join(self.name(n) for n in data['nodes'])}", sys.stderr)
        elif event == "executing":
            self._finish_current()
            if data.get("node") is not None:
                self.count += 1
                self.current, self.node_started = data["node"], time.perf_counter()
                say(f"[{self.count}] {self.name(self.current)} ...", sys.stderr)

    def wrote(self, path: Path) -> None:
        """`wrote PATH`, the first time this run writes the file."""
        if path not in self.written:
            self.written.add(path)
            say(f"wrote {path}")

    def note(self, text: str, indent: str = "") -> None:
        """A note or warning on stderr, once per run."""
        if text not in self.said:
            self.said.add(text)
            say(f"{indent}{text}", sys.stderr)

    def _finish_current(self) -> None:
        if self.current is not None:
            say(f"    {self.name(self.current)} done in {time.perf_counter() - self.node_started:.2f}s", sys.stderr)
            self.current = None

    def name(self, node_id: str) -> str:
        """`#ID class "title"`, as the per-node lines show a node."""
        node = self.prompt.get(node_id, {})
        title = (node.get("_meta") or {}).get("title")
        class_type = node.get("class_type", "?")
        return f"#{node_id} {class_type}" + (f" \"{title}\"" if title and title != class_type else "")


class _ReporterLogHandler(logging.Handler):
    """The pack's log records as the reporter's notes: once per run, above the bars."""

    def __init__(self, reporter: NodeReporter, level: int):
        super().__init__(level)
        self.reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message in self.reporter.said:  # a node already showed it (Apply Hypernet's width warning)
            return
        self.reporter.said.add(message)
        say(f"{record.levelname.lower()}: {message}", sys.stderr)


@contextlib.contextmanager
def pack_logs_reported(reporter: NodeReporter) -> Iterator[None]:
    """While a run lasts, the pack's warnings (errors only with --quiet) go through `reporter`."""
    handler = _ReporterLogHandler(reporter, logging.ERROR if reporter.quiet else logging.WARNING)
    logger = logging.getLogger(PACK_LOGGER)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
