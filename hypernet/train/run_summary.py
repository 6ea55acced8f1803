"""run_summary.json: what one run was and did, in the run's log folder, for comparing runs side
by side (a sweep's specs in a comparison table). Written at the end of every run, also one that was
stopped or diverged after a step; a resumed run rewrites it. Its keys, exactly:

spec              the spec in a few words: '1,2,1 swish' (+ ' ln', ' dropout 0,0.1,0'), sweep.py
parameters        the network's parameter count
steps             the network's step when the run ended
final_loss        the training loss of the run's last step (null when it ran none)
best_val_loss     the lowest validation loss so far, a resumed run's earlier steps included (null
                  without validation)
best_val_step     the step of best_val_loss (null without validation)
seconds_per_step  wall time from the end of preparing (encoding, model setup) to the end of the
                  run, over the steps it ran: the steps with what they write (validation,
                  previews, step files) and the final save (null when it ran none)"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..files import atomic_write_text, safe_join
from .run import TrainingRun
from .sweep import short_spec

SUMMARY_FILE = "run_summary.json"


def run_summary(training: TrainingRun, ended: float) -> dict[str, Any]:
    """The summary of `training` (a run that has been prepared) as it stands at time `ended`
    (time.perf_counter())."""
    result, prepared = training.result, training.prepared
    steps_run = len(result.losses)
    network = training.network
    best_loss = prepared.best_loss if prepared is not None else None
    seconds = (ended - prepared.ready_at) / steps_run if prepared is not None and steps_run else None
    return {"spec": short_spec(network.spec),
            "parameters": sum(p.numel() for p in network.parameters()),
            "steps": int(network.step),
            "final_loss": result.losses[-1] if result.losses else None,
            "best_val_loss": best_loss,
            "best_val_step": result.best_step if best_loss is not None else None,
            "seconds_per_step": seconds}


def write_run_summary(training: TrainingRun, ended: float) -> Optional[Path]:
    """Write (atomically, with the user's umask) the summary into the run's log folder; None when
    the run has no log folder or was never prepared."""
    if training.log_dir is None or training.prepared is None:
        return None
    summary = run_summary(training, ended)
    return atomic_write_text(safe_join(training.log_dir, SUMMARY_FILE), json.dumps(summary, indent=2) + "\n")
