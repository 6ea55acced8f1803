"""Gradient checkpointing (backend.checkpointed) in the headless backend: it really runs (the
blocks are wrapped, recomputed in backward, and hold fewer activations), and a recomputed block
draws the dropout masks its forward pass drew."""

import pytest
import torch
import torch.utils.checkpoint as torch_checkpoint

from hypernet_studio.hypernet.network import Hypernetwork
from hypernet_studio.hypernet.sd.headless import headless_objects
from hypernet_studio.hypernet.sd.tiny import build_tiny_components
from hypernet_studio.hypernet.spec import HypernetSpec
from hypernet_studio.hypernet.train.backend import checkpointed
from hypernet_studio.hypernet.train.backend_diffusers import DiffusersBackend


class _DropoutBlock(torch.nn.Module):
    """A block called with keywords, as diffusers calls its blocks, that records its dropout masks."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.masks = []

    def forward(self, hidden_states, scale=1.0):
        mask = torch.nn.functional.dropout(torch.ones_like(hidden_states), p=0.5, training=True)
        self.masks.append(mask)
        return self.linear(hidden_states * mask) * scale


def test_a_recomputed_block_draws_the_masks_of_its_forward_pass():
    block = _DropoutBlock()
    x = torch.randn(4, 8, requires_grad=True)
    with checkpointed([block]):
        out = block(hidden_states=x, scale=2.0)
        assert len(block.masks) == 1
        out.sum().backward()
    assert len(block.masks) == 2  # the recomputation ran
    assert torch.equal(block.masks[0], block.masks[1])
    reference = block.linear(x.detach() * block.masks[0]) * 2.0
    assert torch.allclose(out, reference)


def test_torch_sees_keyword_tensors_when_choosing_whose_rng_state_to_save(monkeypatch):
    """torch's checkpoint saves a GPU's RNG state only for the devices of the tensors it is handed
    positionally (_infer_device_type / get_device_states read *args). A CPU has no such state to
    lose, so this checks what torch is handed: the block's keyword tensor must be among it."""
    seen = []
    infer = torch_checkpoint._infer_device_type

    def recording(*args):
        seen.append(args)
        return infer(*args)
    monkeypatch.setattr(torch_checkpoint, "_infer_device_type", recording)
    block = _DropoutBlock()
    x = torch.randn(4, 8, requires_grad=True)
    with checkpointed([block]):
        block(hidden_states=x).sum().backward()
    assert seen and all(any(arg is x for arg in args) for args in seen)


@pytest.fixture(scope="module")
def tiny():
    return headless_objects(build_tiny_components(seed=0))


def _saved_bytes_and_calls(tiny, checkpointing):
    """One UNet call and its backward through the headless backend: the bytes autograd saved for
    backward outside checkpointed blocks (inside them torch keeps only the inputs), and how often
    the checkpointed blocks ran in the forward pass and in backward."""
    model, clip, vae = tiny
    backend = DiffusersBackend(model, clip, vae)
    spec = HypernetSpec(activation="relu", weight_init="XavierNormal", sizes=None)
    network = Hypernetwork.build(spec, sizes=backend.attention_widths(), seed=1, name="ckpt").train()
    network.requires_grad_(True)
    backend.attach(network)
    calls = {"forward": 0, "backward": 0}
    phase = ["forward"]
    patches = backend._active_patches

    def counted():
        calls[phase[0]] += 1
        return patches()
    backend._active_patches = counted
    saved = [0]

    def pack(tensor):
        saved[0] += tensor.numel() * tensor.element_size()
        return tensor
    x = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    context = clip.encode_texts(["a red square", "a blue circle"])
    with backend.session(checkpointing):
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = backend.predict(x, torch.tensor([10, 500]), context)
        phase[0] = "backward"
        out.square().mean().backward()
    return saved[0], calls


def test_checkpointing_runs_in_the_headless_backend_and_saves_fewer_activations(tiny):
    unet = tiny[0].components.unet
    blocks = len(unet.down_blocks) + 1 + len(unet.up_blocks)
    plain_bytes, plain_calls = _saved_bytes_and_calls(tiny, False)
    checkpointed_bytes, checkpointed_calls = _saved_bytes_and_calls(tiny, True)
    assert plain_calls == {"forward": 0, "backward": 0}
    assert checkpointed_calls == {"forward": blocks, "backward": blocks}  # each block wrapped, each recomputed
    # The UNet's activations live in its blocks; outside them only the embeddings, conv_in/out.
    assert checkpointed_bytes < 0.5 * plain_bytes, (checkpointed_bytes, plain_bytes)


class _OptionsReader(torch.nn.Module):
    """A layer that reads a key of its options dict, as a ComfyUI patch reads transformer_options,
    and writes one, as ComfyUI's SpatialTransformer writes block_index into it."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)
        self.seen = []

    def forward(self, x, transformer_options):
        self.seen.append(transformer_options["transformer_index"])
        transformer_options["block_index"] = len(self.seen)
        return self.linear(x) * float(transformer_options["transformer_index"])


def test_a_recomputation_sees_the_options_the_forward_saw():
    """ComfyUI changes the dict it hands every layer between layers: the recomputation during
    backward must not read the caller's later values (here 2 instead of 1)."""
    layer = _OptionsReader()
    x = torch.randn(4, 8, requires_grad=True)
    options = {"transformer_index": 1}
    with checkpointed([layer]):
        out = layer(x, options)
        options["transformer_index"] = 2  # the caller moves on to its next layer
        out.sum().backward()
    assert layer.seen == [1, 1]
    assert options["block_index"] == 1  # the forward got the caller's own dict, as unwrapped
    reference = torch.autograd.grad((layer.linear(x) * 1.0).sum(), x)[0]
    assert torch.allclose(x.grad, reference)
