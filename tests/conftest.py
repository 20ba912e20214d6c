"""Shared fixtures: the format table drives the parametrization of every codec test."""

import numpy as np
import pytest

import lowfp

ml_dtypes = pytest.importorskip("ml_dtypes")

#: lowfp name → ml_dtypes dtype, for every format both define.
ML_DTYPES = {
    f.name: np.dtype(getattr(ml_dtypes, f.name)) if hasattr(ml_dtypes, f.name) else np.dtype(f.name)
    for f in lowfp.formats()
    if hasattr(ml_dtypes, f.name) or f.name in ("float16", "float32")
}

SMALL = [f.name for f in lowfp.formats() if f.bits <= 8]
SHARED_SMALL = [n for n in SMALL if n in ML_DTYPES]


def ml_encode(x: np.ndarray, name: str) -> np.ndarray:
    """ml_dtypes' codes for x (x's own dtype, converted by astype)."""
    dt = ML_DTYPES[name]
    return x.astype(dt).view({1: np.uint8, 2: np.uint16, 4: np.uint32}[dt.itemsize])


@pytest.fixture(params=SHARED_SMALL)
def small_shared(request):
    return request.param


@pytest.fixture(params=[1, 2])
def threads(request):
    old = lowfp.num_threads()
    lowfp.set_num_threads(request.param)
    yield request.param
    lowfp.set_num_threads(old)
