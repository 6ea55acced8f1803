"""DeepDanbooru "resnet_custom_v3" in torch, loading A1111's `model-resnet_custom_v3.pt`.

The network is a bottleneck ResNet with folded batch norm: 179 convolutions named
`n_Conv_0`...`n_Conv_178` (the names of the state dict A1111 distributes), stages of
3/8/40/3/3 blocks (stage 3 downsamples twice), TF-style asymmetric padding for strided
convs, a bias-free 1x1 head, global average pooling and a sigmoid. It is built here from
a stage table rather than written out layer by layer (docs/preprocessing.md)."""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..preprocess.crop import fill_plan, render_plan
from ..preprocess.options import DEEPBOORU_FILE_NAME
from ..safe_load import load_safetensors, load_torch_weights
from .deepbooru_post import TagOptions, format_tags

logger = logging.getLogger(__name__)

DEEPBOORU_URL = "https://github.com/AUTOMATIC1111/TorchDeepDanbooru/releases/download/v1/model-resnet_custom_v3.pt"
DEEPBOORU_NUM_TAGS = 9176
DEEPBOORU_INPUT_SIZE = 512
DEEPBOORU_NUM_CONVS = 179

# (bottleneck width, output width, blocks, stride of the first block, blocks that downsample
# again mid-stage). At a stage's first block the projection conv is numbered before the
# main path; at the mid-stage downsample (stage 3, block 21) it is numbered after it.
STAGES: tuple[tuple[int, int, int, int, tuple[int, ...]], ...] = (
    (64, 256, 3, 1, ()),
    (128, 512, 8, 2, ()),
    (256, 1024, 40, 2, (20,)),
    (512, 2048, 3, 2, ()),
    (1024, 4096, 3, 2, ()),
)


@dataclass(frozen=True)
class _Block:
    """Conv indices of one bottleneck block."""

    reduce: int
    spatial: int
    expand: int
    projection: Optional[int]
    stride: int


class DeepDanbooruNet(nn.Module):
    """resnet_custom_v3; input NHWC float RGB 0..1 (as A1111 feeds it), output sigmoid probabilities."""

    def __init__(self, num_tags: int = DEEPBOORU_NUM_TAGS):
        super().__init__()
        self.num_tags = num_tags
        self._count = 0
        self._add_conv(3, 64, 7, stride=2)
        self.blocks: list[_Block] = []
        in_width = 64
        for width, out_width, count, first_stride, mid_downsamples in STAGES:
            for index in range(count):
                if index == 0:
                    projection = self._add_conv(in_width, out_width, 1, stride=first_stride)
                    block = self._add_main_path(in_width, width, out_width, first_stride, projection)
                elif index in mid_downsamples:
                    block = self._add_main_path(in_width, width, out_width, 2, None)
                    block = _Block(block.reduce, block.spatial, block.expand,
                                   self._add_conv(in_width, out_width, 1, stride=2), 2)
                else:
                    block = self._add_main_path(in_width, width, out_width, 1, None)
                self.blocks.append(block)
                in_width = out_width
        self.head_index = self._add_conv(in_width, num_tags, 1, bias=False)
        self.max_pool = nn.MaxPool2d(kernel_size=3, stride=2)

    def _add_conv(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, bias: bool = True) -> int:
        index = self._count
        self.add_module(f"n_Conv_{index}", nn.Conv2d(in_channels, out_channels, kernel, stride=stride, bias=bias))
        self._count += 1
        return index

    def _add_main_path(self, in_width: int, width: int, out_width: int, stride: int,
                       projection: Optional[int]) -> _Block:
        return _Block(self._add_conv(in_width, width, 1), self._add_conv(width, width, 3, stride=stride),
                      self._add_conv(width, out_width, 1), projection, stride)

    def conv(self, index: int) -> nn.Conv2d:
        """The convolution named n_Conv_<index>."""
        return getattr(self, f"n_Conv_{index}")

    def forward(self, images_nhwc: torch.Tensor) -> torch.Tensor:
        x = images_nhwc.permute(0, 3, 1, 2)
        x = F.relu(self.conv(0)(F.pad(x, [2, 3, 2, 3])))
        x = self.max_pool(F.pad(x, [0, 1, 0, 1], value=float("-inf")))
        for block in self.blocks:
            y = F.relu(self.conv(block.reduce)(x))
            # TF "SAME": strided 3x3 pads only right/bottom.
            y = F.pad(y, [0, 1, 0, 1] if block.stride == 2 else [1, 1, 1, 1])
            y = self.conv(block.expand)(F.relu(self.conv(block.spatial)(y)))
            shortcut = x if block.projection is None else self.conv(block.projection)(x)
            x = F.relu(y + shortcut)
        logits = self.conv(self.head_index)(x).mean(dim=(2, 3))
        return torch.sigmoid(logits)


# --------------------------------------------------------------------------- files
def missing_model_message(name: str, folders: Sequence[Path]) -> str:
    """The error users see when the weights are absent: where to put which file, and where to get it."""
    where = ", ".join(str(f) for f in folders) or "the deepbooru models folder"
    return (f"Deepbooru model {name!r} not found. Put {DEEPBOORU_FILE_NAME} (A1111's TorchDeepDanbooru "
            f"weights, ~644 MB) into {where}. Download it yourself from {DEEPBOORU_URL} "
            "(this pack never downloads models).")


def read_deepbooru_file(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(tensors, tags) from a `.pt` state dict (tags under key "tags", loaded with weights_only)
    or a `.safetensors` file (tags as a JSON list in metadata "tags")."""
    path = Path(path)
    if path.suffix.lower() == ".safetensors":
        tensors, metadata = load_safetensors(path, "a Deepbooru model")
        tags = json.loads(metadata.get("tags", "[]"))
    else:
        loaded = load_torch_weights(path, "a Deepbooru model")
        if not isinstance(loaded, dict):
            raise ValueError(f"Deepbooru model {path} is not a state dict")
        tags = list(loaded.pop("tags", []))
        tensors = loaded
    if not all(isinstance(t, str) for t in tags):
        raise ValueError(f"Deepbooru model {path}: 'tags' must be a list of strings")
    return tensors, tags


def build_deepbooru_net(tensors: dict[str, torch.Tensor], source: str = "state dict") -> DeepDanbooruNet:
    """A network holding `tensors` (num_tags from n_Conv_178), without allocating random weights first."""
    head = tensors.get(f"n_Conv_{DEEPBOORU_NUM_CONVS - 1}.weight")
    if head is None:
        raise ValueError(f"{source} is not a resnet_custom_v3 Deepbooru model (no n_Conv_178.weight)")
    with torch.device("meta"):
        net = DeepDanbooruNet(num_tags=head.shape[0])
    try:
        net.load_state_dict(tensors, strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"{source} does not match the resnet_custom_v3 architecture: {exc}") from exc
    return net.float().eval()


@dataclass
class DeepbooruModel:
    """A loaded tagger: network on its device plus the tag names."""

    net: DeepDanbooruNet
    tags: list[str]
    path: Path
    device: torch.device

    def to(self, device: torch.device) -> "DeepbooruModel":
        """Move the network (in place) and return self."""
        device = torch.device(device)
        if device != self.device:
            self.net.to(device)
            self.device = device
        return self

    def offload(self) -> None:
        """Park the network on the CPU, freeing accelerator memory (A1111 does this after each use
        unless told to keep models in memory)."""
        self.to(torch.device("cpu"))

    def probabilities(self, images: list[Image.Image], batch_size: int = 8,
                      on_batch: Optional[Callable[[int], None]] = None,
                      input_size: int = DEEPBOORU_INPUT_SIZE) -> np.ndarray:
        """[N, num_tags] probabilities; images are fitted with edge fill to 512x512 (A1111).

        The net is fully convolutional, so a smaller `input_size` (>= 128) runs faster at
        some cost in accuracy (the weights were trained at 512)."""
        if input_size < 128 or input_size % 32:
            raise ValueError(f"Deepbooru input size {input_size}: use a multiple of 32, at least 128")
        rows = []
        autocast = self.device.type == "cuda"
        batch_size = max(1, batch_size)
        for start in range(0, len(images), batch_size):
            batch = np.stack([prepare_deepbooru_input(img, input_size) for img in images[start:start + batch_size]])
            tensor = torch.from_numpy(batch).to(self.device)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=autocast):
                rows.append(self.net(tensor).float().cpu().numpy())
            if on_batch is not None:
                on_batch(min(len(images), start + batch_size))
        return np.concatenate(rows) if rows else np.zeros((0, len(self.tags)), dtype=np.float32)


def prepare_deepbooru_input(image: Image.Image, size: int = DEEPBOORU_INPUT_SIZE) -> np.ndarray:
    """RGB fitted inside size x size, bars filled by edge replication, float32 HWC 0..1."""
    rgb = image.convert("RGB")
    fitted = render_plan(rgb, fill_plan(rgb.width, rgb.height, size, size))
    return np.asarray(fitted, dtype=np.float32) / 255.0


_cache_lock = threading.Lock()
_cached: dict[tuple, DeepbooruModel] = {}


def load_deepbooru(path: Path, device: Optional[torch.device] = None) -> DeepbooruModel:
    """Load (or reuse) the tagger at `path`, moved to `device`. One model is kept between runs
    (wherever it was last left, see `offload`); the cache key includes the file's size and
    mtime, so a replaced file is reloaded."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(missing_model_message(path.name, [path.parent]))
    device = torch.device(device or "cpu")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        if key in _cached:
            return _cached[key].to(device)
        tensors, tags = read_deepbooru_file(path)
        net = build_deepbooru_net(tensors, source=f"Deepbooru model {path}")
        if tags and len(tags) != net.num_tags:
            raise ValueError(f"Deepbooru model {path}: {len(tags)} tags for {net.num_tags} outputs")
        if not tags:
            raise ValueError(f"Deepbooru model {path} has no 'tags' list")
        model = DeepbooruModel(net=net.to(device), tags=tags, path=path, device=device)
        _cached.clear()
        _cached[key] = model
        logger.info("loaded Deepbooru model %s (%d tags) on %s", path, len(tags), device)
        return model


def tag_images(model: DeepbooruModel, images: list[Image.Image], options: TagOptions, batch_size: int = 8,
               on_batch: Optional[Callable[[int], None]] = None, input_size: int = DEEPBOORU_INPUT_SIZE) -> list[str]:
    """One caption string per image."""
    probabilities = model.probabilities(images, batch_size, on_batch, input_size)
    return [format_tags(row, model.tags, options) for row in probabilities]

