import contextlib
import os
import sys
from pathlib import Path

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


@pytest.fixture(scope="session")
def quick_book(tmp_path_factory):
    """The whole book built once per session in the quick profile, in a scratch folder with its own results.

    test_book.py checks its files, test_browser.py opens its pages; a stale claims file is planted first
    to show that executing a chapter forgets the claims an older execution recorded. To iterate on the
    browser test, ALIGNKD_BUILT_BOOK=<root> reuses a book already built there (by `book.build`).
    """
    from alignkd import book

    if os.environ.get("ALIGNKD_BUILT_BOOK"):
        root = Path(os.environ["ALIGNKD_BUILT_BOOK"])
        yield root, root / "_build" / "html" / "index.html"
        return

    root = book.stage_book(tmp_path_factory.mktemp("book"))
    patch = pytest.MonkeyPatch()
    patch.setenv("ALIGNKD_RESULTS", str(root / "results"))  # hermetic: no cached results from earlier runs
    stale = root / "results" / "quick" / "claims" / "01_theory.csv"
    stale.parent.mkdir(parents=True)
    stale.write_text("chapter,claim_id\n01_theory,stale\n")
    terminal = root / "terminal.log"  # what `make book` would print, kernel processes included (fd level)
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(terminal, "w") as log:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
            try:
                with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                    index = book.build("quick", book_root=root)
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(saved[0], 1), os.dup2(saved[1], 2)
        yield root, index
    finally:
        for fd in saved:
            os.close(fd)
        patch.undo()
