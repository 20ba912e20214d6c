"""A child of fork (DataLoader workers, multiprocessing's "fork" start method) has none of the
parent's threads; lowfp's pools must be rebuilt there, not waited on for ever."""

import os
import time

import numpy as np
import pytest

import lowfp

pytestmark = [
    pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform"),
    # Python 3.12+ warns about fork in a process with threads: the case under test
    pytest.mark.filterwarnings("ignore:This process .* fork:DeprecationWarning"),
]

N = 1 << 18  # above the 32Ki elements a call keeps on the calling thread


def pooled_work(x):
    """One call through each pool: a codec (caller plus helpers) and blockwise (rayon)."""
    codes = lowfp.encode(x, "float8_e4m3fn", rounding="stochastic16", seed=5)
    q = lowfp.quantize_blockwise(x, lowfp.Dynamic(8), block_size=256)
    return codes, np.asarray(q.dequantize())


def wait(pid, seconds=60.0):
    """The child's exit code, or None (the child killed) if it did not end in time."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return None


@pytest.mark.parametrize("threads", [2, 3])
def test_a_forked_child_uses_new_threads(restore_threads, threads):
    lowfp.set_num_threads(threads)
    x = np.random.default_rng(0).standard_normal(N).astype(np.float32)
    want = pooled_work(x)  # the parent's pools exist and have run
    pid = os.fork()
    if pid == 0:  # the child: exit code 0 if its results are the parent's
        ok = False  # and 3 if anything raises: the child must never return into pytest
        try:
            ok = lowfp.num_threads() == threads
            got = pooled_work(x)
            ok = ok and all(np.array_equal(a, b) for a, b in zip(got, want))
            lowfp.set_num_threads(2)  # and a later resize
            ok = ok and np.array_equal(pooled_work(x)[0], want[0])
        finally:
            os._exit(0 if ok else 3)
    code = wait(pid)
    assert code is not None, "the forked child hung on its first pooled call"
    assert code == 0, "the forked child's results differ from the parent's"
    assert all(np.array_equal(a, b) for a, b in zip(pooled_work(x), want))  # parent unharmed


def test_dataloader_workers_forked_from_a_parent_that_used_the_pools(restore_threads):
    torch = pytest.importorskip("torch")
    import multiprocessing

    lowfp.set_num_threads(2)
    x = np.random.default_rng(1).standard_normal(N).astype(np.float32)
    want = lowfp.encode(x, "float16")

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.from_numpy(lowfp.encode(x, "float16").astype(np.int32) + i)

    loader = torch.utils.data.DataLoader(
        Items(),
        batch_size=None,
        num_workers=2,
        multiprocessing_context=multiprocessing.get_context("fork"),
        timeout=60,  # a hung worker raises instead of hanging the test
    )
    got = [t.numpy() for t in loader]
    assert [np.array_equal(g, want.astype(np.int32) + i) for i, g in enumerate(got)] == [True] * 4
