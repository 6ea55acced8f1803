"""Preview images during training: a short DDIM run through the backend's own predict(),
so it works the same on the headless and the ComfyUI backend."""
from __future__ import annotations

import numpy as np
import torch

from .backend import NoiseSchedule


@torch.no_grad()
def ddim_sample(predict, schedule: NoiseSchedule, cond: torch.Tensor, uncond: torch.Tensor,
                shape: tuple[int, ...], seed: int, steps: int = 20, cfg: float = 7.0,
                device: torch.device = torch.device("cpu")) -> torch.Tensor:
    """Deterministic DDIM (eta 0) with classifier-free guidance; returns scaled latents."""
    alphas = schedule.alphas_cumprod.to(torch.float64)
    total = schedule.num_train_timesteps
    timesteps = np.unique(np.linspace(0, total - 1, max(1, steps)).round().astype(np.int64))[::-1]
    x = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(seed))).to(device)
    context = torch.cat([uncond, cond]).to(device)
    for index, t in enumerate(timesteps):
        a_t = float(alphas[t])
        a_prev = float(alphas[timesteps[index + 1]]) if index + 1 < len(timesteps) else 1.0
        step = torch.full((2 * shape[0],), int(t), device=device)
        out_uncond, out_cond = predict(torch.cat([x, x]), step, context).float().chunk(2)
        out = out_uncond + cfg * (out_cond - out_uncond)
        if schedule.prediction_type == "v_prediction":
            x0 = a_t ** 0.5 * x - (1 - a_t) ** 0.5 * out
            eps = a_t ** 0.5 * out + (1 - a_t) ** 0.5 * x
        else:
            eps = out
            x0 = (x - (1 - a_t) ** 0.5 * eps) / a_t ** 0.5
        x = a_prev ** 0.5 * x0 + (1 - a_prev) ** 0.5 * eps
    return x
