"""The random draws of training: offset noise as its paper defines it, and draws that depend only
on their seed, so a micro-batch draws the same however many processes share it."""
import torch

from hypernet_studio.hypernet.train.random_draws import derive_seed, draw_noise, micro_batch_draws, seeded_torch_rng


def test_noise_offset_adds_one_value_per_sample_and_channel():
    shape = torch.Size([2, 4, 8, 8])
    plain = draw_noise(shape, torch.Generator().manual_seed(3))
    offset = draw_noise(shape, torch.Generator().manual_seed(3), 0.1)
    generator = torch.Generator().manual_seed(3)
    eps = torch.randn(shape, generator=generator)
    expected = eps + 0.1 * torch.randn((2, 4, 1, 1), generator=generator)
    assert torch.equal(plain, eps), "off: exactly A1111's draw"
    torch.testing.assert_close(offset, expected, rtol=0, atol=0)
    difference = offset - plain
    assert torch.allclose(difference, difference[:, :, :1, :1].expand_as(difference))


def test_a_micro_batch_draws_the_same_whichever_process_draws_which_positions():
    whole = micro_batch_draws(7, 3, range(4), 1000, (4, 8, 8), 0.1)
    halves = [micro_batch_draws(7, 3, positions, 1000, (4, 8, 8), 0.1) for positions in (range(2), range(2, 4))]
    assert whole[0].shape == (4,) and whole[1].shape == (4, 4, 8, 8)
    assert torch.equal(whole[0], torch.cat([halves[0][0], halves[1][0]]))
    assert torch.equal(whole[1], torch.cat([halves[0][1], halves[1][1]]))
    assert not torch.equal(whole[1], micro_batch_draws(7, 4, range(4), 1000, (4, 8, 8), 0.1)[1]), "another micro-batch"


def test_seeded_torch_rng_repeats_its_draws_and_leaves_the_global_stream_alone():
    torch.manual_seed(0)
    expected_after = torch.rand(3)
    torch.manual_seed(0)
    with seeded_torch_rng(torch.device("cpu"), 5, "dropout", 1):
        first = torch.rand(3)
    with seeded_torch_rng(torch.device("cpu"), 5, "dropout", 1):
        again = torch.rand(3)
    assert torch.equal(first, again) and torch.equal(torch.rand(3), expected_after)
    assert derive_seed(5, "dropout", 1) != derive_seed(5, "dropout", 1, 0), "a rank makes another seed"
