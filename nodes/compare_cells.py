"""Compare Hypernets' sampling: every cell of a grid plan drawn through the host's own core nodes
(CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode), so that each picture is exactly the one a
Load Hypernet + Apply Hypernet + KSampler + VAE Decode graph gives, inside ComfyUI (its own
sampling) and headless (the runtime's stand-ins) alike.

What a grid shares is made once: each prompt and the negative prompt are encoded once, the empty
latent is made once, and each (network, strength) line of the plan is patched once, as a
ModelPatcher clone (the base model's weights are never copied). Strength 0 is the base model
itself. Networks come one at a time from a loader, so a run's 40 step files are never all in
memory at once."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch

from ..hypernet.compare.grid_plan import GridCell, GridPlan
from ..hypernet.network import Hypernetwork
from ..hypernet.patch import apply_hypernetwork
from .host import HOST

NetworkLoader = Callable[[int], Hypernetwork]


@dataclass(frozen=True)
class SamplerSettings:
    """What every cell shares: KSampler's settings and the picture size."""

    sampler_name: str
    scheduler: str
    steps: int
    cfg: float
    width: int
    height: int


class CellSampler:
    """The host's core nodes with the grid's shared inputs: the encoded prompts and the empty latent."""

    def __init__(self, clip: Any, vae: Any, prompts: Sequence[str], negative: str, settings: SamplerSettings):
        encode = HOST.builtin_node("CLIPTextEncode")().encode
        self.positives = [encode(clip=clip, text=prompt)[0] for prompt in prompts]
        self.negative = encode(clip=clip, text=negative)[0]
        self.latent = HOST.builtin_node("EmptyLatentImage")().generate(settings.width, settings.height, 1)[0]
        self.ksampler = HOST.builtin_node("KSampler")()
        self.decoder = HOST.builtin_node("VAEDecode")()
        self.vae = vae
        self.settings = settings

    def picture(self, model: Any, cell: GridCell) -> torch.Tensor:
        """The cell's IMAGE item [1,H,W,3], as KSampler + VAE Decode give it."""
        s = self.settings
        (latent,) = self.ksampler.sample(model=model, seed=cell.seed, steps=s.steps, cfg=s.cfg,
                                         sampler_name=s.sampler_name, scheduler=s.scheduler,
                                         positive=self.positives[cell.prompt_index], negative=self.negative,
                                         latent_image=self.latent, denoise=1.0)
        (images,) = self.decoder.decode(vae=self.vae, samples=latent)
        return images[:1]


def sample_cells(plan: GridPlan, model: Any, network: NetworkLoader, sampler: CellSampler,
                 pictures: list[Optional[torch.Tensor]], warn: Optional[Callable[[str], None]] = None) -> None:
    """Fill `pictures[i]` with cell `plan.cells[i]`'s picture, in the plan's order (line by line),
    with a progress bar over the cells. `pictures` is filled in place, so that after an interrupt
    (the host's exception, raised here unchanged) the caller still has every cell done."""
    progress = HOST.progress_bar(len(plan.cells))
    line: Optional[tuple[Optional[int], float]] = None
    patched = model
    for index, cell in enumerate(plan.cells):
        HOST.throw_if_interrupted()
        if (cell.network_index, cell.strength) != line:
            line = (cell.network_index, cell.strength)
            patched = model if cell.network_index is None else apply_hypernetwork(
                model, network(cell.network_index), cell.strength, warn=warn)
        pictures[index] = sampler.picture(patched, cell)
        progress.update_absolute(index + 1, len(plan.cells))


def done_count(pictures: Sequence[Optional[torch.Tensor]]) -> int:
    return sum(picture is not None for picture in pictures)
