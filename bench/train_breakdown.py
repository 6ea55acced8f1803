"""Where a training step's time goes beyond the floor (used by bench_train.py).

The hypernetwork's own work is measured alone, on the very inputs its modules see in one UNet
forward of the training patch (the text context once, as the training patch reuses it): its
forward and backward, run unfused (as on the CPU), fused (kv_pair.py, as on accelerators) and
torch.compile'd; then the optimizer step. What is left of the measured step after floor +
hypernetwork + optimizer is the loop's own overhead."""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch


def patch_inputs(contenders) -> list[torch.Tensor]:
    """The inputs the hypernetwork computes on in one training forward (context counted once)."""
    from hypernet_studio.hypernet import patch as patch_module
    from hypernet_studio.hypernet.training_patch import patched_for_training

    network = _network(contenders)
    model, memo = patched_for_training(contenders.model, network)
    seen: list[torch.Tensor] = []
    original = patch_module.HypernetPatch.__call__

    def recording(self, q, k, v, extra_options=None):
        seen.append(k.detach().clone())
        return original(self, q, k, v, extra_options)

    patch_module.HypernetPatch.__call__ = recording
    try:
        with torch.no_grad():
            memo.reset()
            model.apply_model(contenders.x_t, contenders.t, contenders.cond)
    finally:
        patch_module.HypernetPatch.__call__ = original
    return seen


def _network(contenders):
    from bench_train import _spec

    from hypernet_studio.hypernet.network import Hypernetwork

    network = Hypernetwork.build(_spec(), sizes=contenders.widths, seed=0, name="alone")
    return network.train().requires_grad_(True)


def _alone_step(network, inputs: list[torch.Tensor], forward: Callable) -> Callable[[], None]:
    def step() -> None:
        total = torch.zeros(())
        for x in inputs:
            k, v = forward(network.layers[x.shape[-1]], x)
            total = total + k.sum() + v.sum()
        total.backward()
        for parameter in network.parameters():
            parameter.grad = None
    return step


def _median_cpu_seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()  # warm-up (and compilation)
    samples = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        samples.append(time.process_time() - started)
    return statistics.median(samples)


def hypernetwork_alone(contenders, repeats: int, compile_too: bool) -> dict:
    """CPU seconds of the hypernetwork's forward+backward alone, per way of running the pair,
    and of one fused AdamW step over its weights."""
    from hypernet_studio.hypernet.kv_pair import pair_forward

    inputs = patch_inputs(contenders)
    network = _network(contenders)
    ways = {"unfused": lambda pair, x: pair_forward(pair, x, fused=False),
            "fused": lambda pair, x: pair_forward(pair, x, fused=True)}
    if compile_too:
        compiled = torch.compile(lambda pair, x: pair_forward(pair, x, fused=False), dynamic=False)
        ways["compiled"] = compiled
    out = {"inputs": [list(x.shape) for x in inputs]}
    for name, forward in ways.items():
        out[f"alone_{name}_cpu_s"] = round(_median_cpu_seconds(_alone_step(network, inputs, forward), repeats), 4)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5, fused=True)

    def optimizer_step() -> None:
        for parameter in network.parameters():
            parameter.grad = torch.ones_like(parameter)
        optimizer.step()
    out["optimizer_cpu_s"] = round(_median_cpu_seconds(optimizer_step, repeats), 4)
    return out


def account(row: dict, alone: dict) -> dict:
    """The step as floor + hypernetwork + optimizer + rest, each as a fraction of the floor."""
    floor, ours = row["floor_cpu_s_per_step"], row["ours_cpu_s_per_step"]
    hypernetwork, optimizer = alone["alone_unfused_cpu_s"], alone["optimizer_cpu_s"]
    return {"hypernetwork_over_floor": round(hypernetwork / floor, 3),
            "optimizer_over_floor": round(optimizer / floor, 3),
            "rest_over_floor": round((ours - floor - hypernetwork - optimizer) / floor, 3),
            "least_possible_over_floor": round((floor + hypernetwork + optimizer) / floor, 3)}
