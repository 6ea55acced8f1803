"""Issue 17: in one base folder, repeated runs of the shipped workflows never change another run's
files. Each run may add files and may change only the files of the run it continues (and the
shared latent cache's index)."""
import hashlib
from pathlib import Path

import pytest

from hypernet_studio.runtime import cli
from hypernet_studio.runtime.headless_host import HEADLESS

WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"
TRAIN = ["--set", "4.steps=4", "--set", "4.save_every=2", "--set", "4.preview_every=0", "--set", "4.csv_every=1",
         "--set", "9.steps=1"]
RESUME = ["--set", "3.hypernetwork_name=example-hypernet/example-hypernet-4.pt", "--set", "4.steps=6",
          "--set", "4.save_every=2", "--set", "4.preview_every=0", "--set", "4.csv_every=1", "--set", "9.steps=1"]


@pytest.fixture
def base(tmp_path):
    from hypernet_studio.runtime.examples import write_examples

    saved = {k: getattr(HEADLESS, k) for k in ("base_dir", "input_dir", "output_dir", "temp_dir", "models_dir",
                                                "device")}
    write_examples(tmp_path)
    yield tmp_path
    for key, value in saved.items():
        setattr(HEADLESS, key, value)


def _hashes(base: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(base.rglob("*"))
            if p.is_file() and "temp" not in p.relative_to(base).parts}


def _run(base: Path, workflow: str, overrides: list[str], continued: str = "") -> None:
    """Run `workflow`; every file that existed before is unchanged unless it is `continued`'s."""
    before = _hashes(base)
    assert cli.main(["run", str(WORKFLOWS / workflow), "--base-dir", str(base), "--quiet", *overrides]) == 0
    after = _hashes(base)
    assert set(before) <= set(after), "no file disappears"
    models = base / "models" / "hypernetworks"
    own = {models / f"{continued}.pt", models / f"{continued}.pt.optim"}
    own_log = base / "output" / "hypernet_training" / continued
    # The latent cache is every run's, not one run's: its index records when each shard was last
    # used, so it changes on every run. Its shards are written once and never change.
    cache_index = base / "output" / "hypernet_cache" / "index.json"
    changed = {p for p in before if before[p] != after[p] and p != cache_index}
    foreign = {p for p in changed if not continued or (p not in own and own_log not in p.parents)}
    assert not foreign, f"{workflow} changed another run's files: {sorted(foreign)}"


def _final_step(base: Path, name: str) -> int:
    from hypernet_studio.hypernet.file_format import load_hypernetwork

    return load_hypernetwork(base / "models" / "hypernetworks" / f"{name}.pt").step


def test_train_twice_then_resume_twice_changes_only_the_continued_run(base):
    _run(base, "train_hypernet.json", TRAIN)
    _run(base, "train_hypernet.json", TRAIN)
    assert _final_step(base, "example-hypernet_00001") == 4
    _run(base, "resume_training.json", RESUME, continued="example-hypernet")
    assert _final_step(base, "example-hypernet") == 6
    _run(base, "resume_training.json", RESUME)  # the first run now holds step 6: a new name
    assert _final_step(base, "example-hypernet_00001") == 4, "the second run is untouched"
    assert _final_step(base, "example-hypernet_00002") == 6


def test_train_resume_train_changes_only_the_continued_run(base, capsys):
    _run(base, "train_hypernet.json", TRAIN)
    capsys.readouterr()
    _run(base, "resume_training.json", RESUME, continued="example-hypernet")
    assert ": continued from step 4 with optimizer state" in capsys.readouterr().out
    _run(base, "train_hypernet.json", TRAIN)
    assert [_final_step(base, n) for n in ("example-hypernet", "example-hypernet_00001")] == [6, 4]


def test_a_schedule_that_ends_early_says_why_the_run_stopped(base, capsys):
    _run(base, "train_hypernet.json", [*TRAIN, "--set", "4.learning_rate=0.0005:2"])
    assert _final_step(base, "example-hypernet") == 2
    assert ": stopped at step 2 of 4: the learning_rate schedule '0.0005:2' ends at step 2" \
        in capsys.readouterr().out
