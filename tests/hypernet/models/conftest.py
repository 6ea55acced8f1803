"""The tiny model's ops are far too small to gain from threads; on a busy CI box OpenMP's
spinning threads make them many times slower, so these tests run single-threaded."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
