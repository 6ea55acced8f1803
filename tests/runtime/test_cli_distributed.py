"""`hypernet-studio run WORKFLOW --nproc-per-node 2`: torchrun starts two processes that each run
the workflow; the weights equal one process with twice the batch_size, and only rank 0 writes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from hypernet_studio.hypernet.file_format import load_hypernetwork
from hypernet_studio.runtime import cli
from hypernet_studio.runtime.examples import write_examples

WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "train_hypernet.json"
# SGD, so the weights compare at fp32 rounding (Adam would amplify it); a short run.
COMMON = ["--set", "4.steps=3", "--set", "4.optimizer=SGD", "--set", "4.learning_rate=0.5", "--set", "4.save_every=2",
          "--set", "4.preview_every=0", "--set", "4.csv_every=1", "--set", "9.steps=1"]


def _wrote(stdout: str) -> list[Path]:
    return [Path(line[len("wrote "):]) for line in stdout.splitlines() if line.startswith("wrote ")]


def test_two_processes_equal_one_with_twice_the_batch_and_only_rank_0_writes(tmp_path, capsys, pack_environment):
    one, two = tmp_path / "one", tmp_path / "two"
    for base in (one, two):
        write_examples(base)
    assert cli.main(["run", str(WORKFLOW), "--base-dir", str(one), "--quiet", "--set", "4.batch_size=2", *COMMON]) == 0
    capsys.readouterr()
    command = [sys.executable, "-m", "hypernet_studio.runtime", "run", str(WORKFLOW), "--base-dir", str(two),
               "--nproc-per-node", "2", "--set", "4.batch_size=1", *COMMON]
    done = subprocess.run(command,
                          capture_output=True, text=True, timeout=600, env=pack_environment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    name = Path("models") / "hypernetworks" / "example-hypernet.pt"
    single, split = load_hypernetwork(one / name), load_hypernetwork(two / name)
    assert single.step == split.step == 3
    want, got = (torch.cat([p.detach().flatten() for p in network.parameters()]) for network in (single, split))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * float(want.abs().max()))
    log = two / "output" / "hypernet_training" / "example-hypernet"
    at_step_2 = load_hypernetwork(log / "example-hypernet-2.pt")
    assert not torch.equal(torch.cat([p.detach().flatten() for p in at_step_2.parameters()]), got), "it trained"

    wrote = _wrote(done.stdout)
    assert len(wrote) == len(set(wrote)), "each file is reported once: only rank 0 writes and reports"
    assert {log / "example-hypernet-2.pt", two / name, log / "hypernetwork_loss.csv"} <= set(wrote)
    samples = [p for p in wrote if p.name.startswith("hypernet_trained_sample")]
    assert len(samples) == 1, "the sampler after training runs on rank 0 only"
    assert sorted(p.name for p in (two / "output").glob("hypernet_trained_sample*")) == [samples[0].name]
    rows = (log / "hypernetwork_loss.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [1, 2, 3]
    # Issue 18: the epoch figures count every process's share of the step, and are said once.
    line = ("4 pictures; 2 images per step (batch 1 x accumulation 1 x 2 processes); 2 steps per epoch; "
            "3 steps = 1.5 epochs")
    assert done.stderr.count(line) == 1, done.stderr[-3000:]
    # Issue 19: the two processes shared the encoding of the 4 pictures into the latent cache (on by
    # default, under the output folder), and rank 0 reports it once.
    assert sum("cache: 0 hits, 4 encoded" in text for text in (done.stdout, done.stderr)) == 1, done.stderr[-3000:]
    assert list((two / "output" / "hypernet_cache").glob("shard-*")), "the shards are in the default cache folder"
