"""These tests run many tiny ops; on a small shared CPU, intra-op threads spin against each
other and make them up to 50x slower, so run them single-threaded."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
