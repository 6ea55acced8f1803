"""The loss curve as an IMAGE (Pillow, no matplotlib): raw losses and a moving average."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

BACKGROUND, AXIS, RAW, SMOOTH, TEXT = (255, 255, 255), (90, 90, 90), (170, 200, 235), (20, 90, 200), (30, 30, 30)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean over `window` values (shorter at the start)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return data
    sums = np.cumsum(np.insert(data, 0, 0.0))
    ends = np.arange(1, data.size + 1)
    starts = np.maximum(0, ends - window)
    return (sums[ends] - sums[starts]) / (ends - starts)


def loss_curve_image(losses: Sequence[float], first_step: int = 1, width: int = 800,
                     height: int = 480, title: str = "loss") -> torch.Tensor:
    """Plot `losses` (one per step, starting at `first_step`) into a float IMAGE [1,H,W,3]."""
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 70, width - 20, 30, height - 40
    draw.rectangle([left, top, right, bottom], outline=AXIS)
    finite = [v for v in losses if np.isfinite(v)]
    if not finite:
        draw.text((left + 10, top + 10), f"{title}: no steps yet", fill=TEXT)
    else:
        low, high = min(finite), max(finite)
        span = (high - low) or max(abs(high), 1e-12)
        count = len(losses)

        def point(index: int, value: float) -> tuple[float, float]:
            x = left + (right - left) * (index / max(1, count - 1))
            y = bottom - (bottom - top) * ((value - low) / span)
            return x, y

        raw = [point(i, v) for i, v in enumerate(losses) if np.isfinite(v)]
        smooth = [point(i, v) for i, v in enumerate(moving_average(losses, max(1, count // 20)))
                  if np.isfinite(v)]
        if len(raw) > 1:
            draw.line(raw, fill=RAW, width=1)
            draw.line(smooth, fill=SMOOTH, width=2)
        else:
            draw.ellipse([raw[0][0] - 2, raw[0][1] - 2, raw[0][0] + 2, raw[0][1] + 2], fill=SMOOTH)
        draw.text((4, top - 4), f"{high:.4g}", fill=TEXT)
        draw.text((4, bottom - 8), f"{low:.4g}", fill=TEXT)
        draw.text((left, bottom + 8), f"step {first_step}", fill=TEXT)
        draw.text((right - 80, bottom + 8), f"step {first_step + count - 1}", fill=TEXT)
        draw.text((left + 10, 8), f"{title} (last {finite[-1]:.5f})", fill=TEXT)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)
