"""Issue 17: `hypernet-studio run` says each event on one line: every file once, every warning once
(none with --quiet), lines above the progress bar, and loss and lr in the bar."""
import io
import logging
import sys
from collections import Counter
from pathlib import Path

import pytest

from hypernet_studio.runtime import cli
from hypernet_studio.runtime.headless_host import HEADLESS
from hypernet_studio.runtime.terminal import NodeReporter, pack_logs_reported, say

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"


@pytest.fixture
def base(tmp_path):
    saved = {k: getattr(HEADLESS, k) for k in ("base_dir", "input_dir", "output_dir", "temp_dir", "models_dir",
                                                "device")}
    yield tmp_path
    for key, value in saved.items():
        setattr(HEADLESS, key, value)


def test_a_validation_run_says_each_file_once(base, capsys):
    """The -best.pt file is rewritten at every new best; it was said each time."""
    from hypernet_studio.runtime.examples import write_examples

    write_examples(base)
    overrides = ["--set", "4.steps=8", "--set", "4.validation_every=1", "--set", "4.validation_split=0.5",
                 "--set", "4.preview_every=0", "--set", "4.save_every=0", "--set", "9.steps=1"]
    assert cli.main(["run", str(WORKFLOWS / "train_hypernet_validation.json"), "--base-dir", str(base), "--quiet",
                     *overrides]) == 0
    wrote = Counter(line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote "))
    assert [line for line, count in wrote.items() if count > 1] == []
    assert len([line for line in wrote if line.endswith("-best.pt")]) == 1


def _width_mismatch_run(base: Path, monkeypatch, *flags: str) -> str:
    from hypernet_studio.runtime.examples import make_random_hypernetwork

    # As in a terminal: no handler on the root logger (pytest adds its own, which hides lastResort).
    monkeypatch.setattr(logging.root, "handlers", [])
    make_random_hypernetwork(base / "models" / "hypernetworks" / "tiny_example.pt", sizes=[32, 48], seed=0)
    assert cli.main(["run", str(WORKFLOWS / "txt2img_hypernet.json"), "--base-dir", str(base), "--set", "7.steps=1",
                     *flags]) == 0
    return "has widths [32, 48]"


def test_the_width_warning_is_said_once(base, capsys, monkeypatch):
    warning = _width_mismatch_run(base, monkeypatch)
    assert capsys.readouterr().err.count(warning) == 1


def test_quiet_says_no_warning(base, capsys, monkeypatch):
    warning = _width_mismatch_run(base, monkeypatch, "--quiet")
    captured = capsys.readouterr()
    assert warning not in captured.err + captured.out
    assert "wrote " in captured.out, "quiet still names the files written"


def test_a_logged_warning_is_said_once_per_run_and_not_at_all_when_quiet(capsys):
    logger = logging.getLogger("hypernet_studio.hypernet.some_module")
    for quiet in (False, True):
        with pack_logs_reported(NodeReporter({}, quiet=quiet)):
            logger.warning("images without captions: 2")
            logger.warning("images without captions: 2")
        assert capsys.readouterr().err.count("images without captions: 2") == (0 if quiet else 1)


def test_a_line_is_written_above_the_progress_bar_not_on_it(monkeypatch):
    """tqdm.write clears the bar first: the line starts at the beginning of the terminal line."""
    from hypernet_studio.runtime.progress import ProgressFactory

    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setattr(sys, "stderr", terminal)
    factory = ProgressFactory(display=True)
    bar = factory(10, "4")
    bar.update_absolute(3)
    say("wrote /tmp/x.pt")
    factory.close_all()
    text = terminal.getvalue()
    before = text[text.index("wrote /tmp/x.pt") - 1]
    assert before in "\r\n", repr(text)


def test_the_bar_shows_the_trainers_loss_and_learning_rate(monkeypatch):
    from hypernet_studio.runtime.executor import Executor

    class Steps:
        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {}, "hidden": {"unique_id": "UNIQUE_ID"}}

        RETURN_TYPES = ()
        FUNCTION = "run"
        OUTPUT_NODE = True

        def run(self, unique_id):
            bar = HEADLESS.progress_bar(2, unique_id)
            HEADLESS.send_event("hypernet.train_step", {"node": unique_id, "step": 1, "loss": 0.125, "lr": 5e-4})
            bar.update_absolute(1, 2)
            return {}

    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    Executor({"Steps": Steps}, show_progress=True).run({"1": {"class_type": "Steps", "inputs": {}}})
    assert "loss=0.125, lr=0.0005" in terminal.getvalue() or "loss=0.125, lr=5e-4" in terminal.getvalue(), \
        terminal.getvalue()
