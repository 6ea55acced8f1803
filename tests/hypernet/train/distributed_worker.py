"""One process of the distributed tests, started by torchrun (test_distributed.py): runs each
scenario with the stand-in backend and writes what it saw to OUT/SCENARIO/rank-R.json (+ .pt)."""
from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fakes import FakeBackend, tiny_dataset  # noqa: E402

from hypernet_studio.hypernet.file_format import load_hypernetwork  # noqa: E402
from hypernet_studio.hypernet.network import Hypernetwork  # noqa: E402
from hypernet_studio.hypernet.spec import HypernetSpec  # noqa: E402
from hypernet_studio.hypernet.train import latents as latents_module  # noqa: E402
from hypernet_studio.hypernet.train import shared_encoding  # noqa: E402
from hypernet_studio.hypernet.train.batches import prepare_examples  # noqa: E402
from hypernet_studio.hypernet.train.config import TrainConfig, TrainHooks  # noqa: E402
from hypernet_studio.hypernet.train.distributed import TrainingProcesses  # noqa: E402
from hypernet_studio.hypernet.train.run import train_hypernetwork  # noqa: E402
from hypernet_studio.hypernet.train.shared_encoding import encode_shared  # noqa: E402

PROCESSES = TrainingProcesses.from_environment()  # None when the test imports this file
RANK = PROCESSES.rank if PROCESSES is not None else 0
BATCHES: list = []  # (micro-batch number, image indices) this process trained on


def record_batches() -> None:
    """Note the images of every micro-batch this process encodes latents for."""
    original = latents_module.LatentCache.latents

    def recording(self, indices, micro_batch):
        BATCHES.append([int(micro_batch), [int(i) for i in indices]])
        return original(self, indices, micro_batch)

    latents_module.LatentCache.latents = recording


def network() -> Hypernetwork:
    spec = HypernetSpec(layer_structure=[1, 2, 1], activation="linear", weight_init="XavierNormal", sizes=[8, 12])
    return Hypernetwork.build(spec, seed=0, name="net")


def examples():
    images, captions = tiny_dataset(8)
    return prepare_examples(images, captions, None, resolution=16, multiple=8)


def config(folder: Path, **overrides) -> TrainConfig:
    values = dict(name="net", steps=3, learning_rate="0.05", optimizer="SGD", seed=7, csv_every=1,
                  latent_sampling="deterministic", save_every=1, preview_every=0, batch_size=2,
                  templates=["[filewords]"], log_dir=folder / "log", final_path=folder / "models" / "net.pt")
    values.update(overrides)
    return TrainConfig(**values)


class Hooks(TrainHooks):
    def __init__(self, stop_at_step=None):
        self.written, self.stopped, self.stop_at_step, self.step = [], [], stop_at_step, 0

    def should_stop(self):
        return self.stop_at_step is not None and self.step >= self.stop_at_step

    def on_step(self, step, total, loss, learn_rate):
        self.step = step

    def on_file_written(self, path):
        self.written.append(str(path))

    def on_stopped_early(self, step, saved):
        self.stopped.append([step, [str(p) for p in saved]])


class FailingBackend(FakeBackend):
    """Predicts NaN (or raises) from its `fail_at`-th call on, on one process only."""

    def __init__(self, fail_at, how):
        super().__init__()
        self.calls, self.fail_at, self.how = 0, fail_at, how

    def predict(self, x_t, timesteps, context):
        self.calls += 1
        prediction = super().predict(x_t, timesteps, context)
        if self.calls >= self.fail_at:
            if self.how == "error":
                raise RuntimeError("a stand-in failure on this process")
            return prediction * float("nan")
        return prediction


def run(name: str, out: Path, backend, start, train_config, hooks=None, processes=None) -> None:
    BATCHES.clear()
    hooks = hooks or Hooks()
    record = {"rank": RANK, "error": None}
    try:
        result = train_hypernetwork(backend, start, examples(), train_config, hooks, processes=processes or PROCESSES)
        record.update(losses=result.losses, interrupted=result.interrupted, step=result.hypernetwork.step,
                      encoded_images=getattr(backend, "encoded_images", None))
        torch.save({"params": [p.detach().clone() for p in result.hypernetwork.parameters()]},
                   out / name / f"rank-{RANK}.pt")
    except Exception as exc:  # noqa: BLE001 - the test asserts on what each process raised
        record["error"] = f"{type(exc).__name__}: {exc}"
        record["traceback"] = traceback.format_exc()
    record.update(written=hooks.written, stopped=hooks.stopped, batches=list(BATCHES))
    (out / name / f"rank-{RANK}.json").write_text(json.dumps(record))


def shared_examples():
    """Six pictures in two bucket sizes, (16, 16) and (24, 8), alternating."""
    generator = torch.Generator().manual_seed(3)
    images = [torch.rand(1, 16, 16 if i % 2 == 0 else 32, 3, generator=generator) for i in range(6)]
    return prepare_examples(images, [f"picture {i}" for i in range(6)], None, resolution=16, multiple=8)


class CountingVae:
    """FakeBackend's latents (the mean, and a std unless `mean_only`), counting the pictures it encodes."""

    def __init__(self, mean_only=False):
        self.pictures, self.mean_only = 0, mean_only

    def __call__(self, pixels):
        self.pictures += pixels.shape[0]
        mean, std = FakeBackend().encode_images(pixels)
        return mean, (None if self.mean_only else std)


# Per scenario, what each rank asks to be encoded (a cache on each machine's disk misses different pictures).
SHARED_ASKS = {"shared": ([0, 1, 2, 5], [2, 3]), "shared_mean_only": ([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4, 5]),
               "shared_one_asks_nothing": ([], [1, 4]), "shared_in_rounds": ([0, 1, 2, 3, 4, 5], [])}
ROUND_PICTURES = {"shared_in_rounds": 3}  # exchanges of 3 pictures: 2 rounds, 2 + 1 and 1 + 2 pictures
DEFAULT_ROUND_PICTURES = shared_encoding.EXCHANGE_ROUND_PICTURES


def run_shared(name: str, out: Path) -> None:
    """encode_shared on its own: what this rank encoded, how many pictures its VAE saw, and every latent."""
    examples, vae = shared_examples(), CountingVae(mean_only=name == "shared_mean_only")
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    shared_encoding.EXCHANGE_ROUND_PICTURES = ROUND_PICTURES.get(name, DEFAULT_ROUND_PICTURES)
    shared = encode_shared(examples, SHARED_ASKS[name][RANK], vae, PROCESSES, chunk=2)
    PROCESSES.barrier()
    (folder / f"rank-{RANK}.json").write_text(json.dumps({"encoded_here": list(shared.encoded_here),
                                                          "vae_pictures": vae.pictures}))
    torch.save({index: list(latent) for index, latent in shared.latents.items()}, folder / f"rank-{RANK}.pt")


class CachingBackend(FakeBackend):
    """FakeBackend with encoder identities, so that the persistent latent cache takes its latents."""

    def vae_identity(self):
        return "fake-vae"

    def clip_identity(self):
        return "fake-clip"


def run_cached(out: Path) -> None:
    """The exact scenario twice through a latent cache: one cache folder for both processes (shared
    storage), and one per process, each process as the first of its own machine (local rank 0)."""
    own_machine = TrainingProcesses(RANK, PROCESSES.world_size, local_rank=0)
    for name, cache, processes in (("cached_shared", "cache", PROCESSES),
                                   ("cached_per_machine", f"cache-{RANK}", own_machine)):
        for attempt in ("first", "second"):
            folder = out / name / attempt
            folder.mkdir(parents=True, exist_ok=True)
            train_config = config(folder, gradient_accumulation=2, cache_dir=out / name / cache)
            run(f"{name}/{attempt}", out, CachingBackend(), network(), train_config, processes=processes)


def main(out: Path) -> None:
    PROCESSES.start(torch.device("cpu"))  # training joins the group itself; encode_shared alone needs it joined
    for name in SHARED_ASKS:
        run_shared(name, out)
    record_batches()
    scenarios = {
        "exact": lambda folder: (FakeBackend(), network(), config(folder, gradient_accumulation=2)),
        # the latents' std is exchanged too: fresh draws from mean + std on every process
        "exact_random": lambda folder: (FakeBackend(), network(),
                                        config(folder, gradient_accumulation=2, latent_sampling="random")),
        "nan": lambda folder: (FailingBackend(4 if RANK == 1 else 10**9, "nan"), network(), config(folder, steps=5)),
        "error": lambda folder: (FailingBackend(3 if RANK == 1 else 10**9, "error"), network(),
                                 config(folder, steps=5)),
        "first_half": lambda folder: (FakeBackend(), network(), config(folder, steps=2, save_every=2)),
        "second_half": lambda folder: (FakeBackend(), load_hypernetwork(out / "resume_from" / "net-2.pt"),
                                       config(folder, steps=4, save_every=0)),
    }
    for name, make in scenarios.items():
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        if name == "second_half" and not (out / "resume_from" / "net-2.pt").is_file():
            continue
        backend, start, train_config = make(folder)
        run(name, out, backend, start, train_config)
    run_cached(out)
    folder = out / "interrupt"
    folder.mkdir(parents=True, exist_ok=True)
    run("interrupt", out, FakeBackend(), network(), config(folder, steps=6, save_every=0),
        Hooks(stop_at_step=2 if RANK == 1 else None))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
