"""Pictures encoded once across processes (shared_encoding.py): what a process alone does, and
how the pictures are shared. The exchange between two processes is tested under torchrun in
test_distributed.py."""
import pytest
import torch

from hypernet_studio.hypernet.train.batches import prepare_examples
from hypernet_studio.hypernet.train.distributed import SingleProcess
from hypernet_studio.hypernet.train.shared_encoding import encode_shared, encoding_order, encoding_share


def examples(count=7):
    """Pictures in two bucket sizes: (16, 16) at even indices, (24, 8) at odd ones."""
    generator = torch.Generator().manual_seed(0)
    images = [torch.rand(1, 16, 16 if i % 2 == 0 else 32, 3, generator=generator) for i in range(count)]
    return prepare_examples(images, [str(i) for i in range(count)], None, resolution=16, multiple=8)


class Vae:
    """Latent = 8x8-pooled pixels plus the picture's number, std = 0.1; notes each call's pictures."""

    def __init__(self):
        self.calls = []

    def __call__(self, pixels):
        self.calls.append(pixels.shape[0])
        mean = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8).repeat(1, 2, 1, 1)[:, :4]
        return mean.double(), torch.full_like(mean, 0.1)


def test_a_process_alone_encodes_what_it_is_asked_in_runs_of_one_size():
    pictures, vae = examples(), Vae()
    pictures[5].release_pixels()  # not asked for: its pixels must not be needed
    shared = encode_shared(pictures, [6, 0, 1, 2, 3, 4, 0], vae, SingleProcess(), chunk=2)
    assert shared.encoded_here == (0, 2, 4, 6, 1, 3), "size groups in order of their first picture"
    assert vae.calls == [2, 2, 2], "chunks of 2 pictures of one size"
    assert sorted(shared.latents) == [0, 1, 2, 3, 4, 6]
    for index, (mean, std) in shared.latents.items():
        alone_mean, alone_std = Vae()(pictures[index].pixels_to_encode())
        assert mean.dtype == torch.float32 and mean.shape == alone_mean.shape
        assert torch.equal(mean, alone_mean.float()) and torch.equal(std, alone_std.float())
    assert encode_shared(pictures, [], vae, SingleProcess()).latents == {}


@pytest.mark.parametrize("world_size", [2, 3])
def test_every_picture_is_encoded_by_exactly_one_process_each_with_its_part_of_every_size(world_size):
    sizes = [example.size for example in examples(11)]
    wanted = [10, 9, 8, 7, 5, 4, 3, 2, 1, 0]
    shares = [encoding_share(sizes, wanted, rank, world_size) for rank in range(world_size)]
    assert sorted(index for share in shares for index in share) == sorted(wanted)
    assert encoding_order(sizes, wanted) == [0, 2, 4, 8, 10, 1, 3, 5, 7, 9]
    for size in set(sizes):
        counts = [sum(sizes[index] == size for index in share) for share in shares]
        assert max(counts) - min(counts) <= 1, counts


def test_a_process_alone_exchanges_nothing():
    alone, tensor = SingleProcess(), torch.arange(3)
    assert alone.all_gather_tensors([tensor]) == [[tensor]] and alone.local_rank == 0
    assert alone.exchange_device() == torch.device("cpu")
    alone.barrier()
