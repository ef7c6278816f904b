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


@pytest.fixture
def double_precision():
    """float64 by default, for tests that compare closed forms at 1e-8 rather than float32 noise
    (`pytestmark = pytest.mark.usefixtures("double_precision")`)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
