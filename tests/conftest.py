import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The suite's models and tensors are tiny: on 2 cores extra intra-op threads only add contention
    (a PPO test took 50 s with 2 threads and 1 s with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
