"""The format table: names, aliases, specs, derived properties vs ml_dtypes."""

import numpy as np
import pytest

import lowfp
from conftest import ML_DTYPES, ml_dtypes


@pytest.mark.parametrize("f", lowfp.formats(), ids=lambda f: f.name)
def test_parse_name_round_trip(f):
    assert lowfp.format(f.name) == f
    g = lowfp.Format(f.exp_bits, f.man_bits, f.bias, f.signed, f.inf, f.nan, f.subnormals)
    assert g == f and g.name == f.name


@pytest.mark.parametrize("name", [n for n in ML_DTYPES if n != "float32"])
def test_properties_match_ml_dtypes_finfo(name):
    f = lowfp.format(name)
    fi = ml_dtypes.finfo(ML_DTYPES[name])
    assert f.max == float(fi.max)
    assert f.min_normal == float(fi.smallest_normal)
    assert f.min_subnormal == float(fi.smallest_subnormal)
    assert f.eps == float(fi.eps)
    assert f.bits == fi.bits


def test_ml_dtypes_covers_all_its_float_types():
    names = {n for n in dir(ml_dtypes) if n.startswith(("float8_", "float6_", "float4_"))}
    names.add("bfloat16")
    assert names <= set(ML_DTYPES), names - set(ML_DTYPES)


def test_aliases_and_specs():
    assert lowfp.format("e4m3").name == "float8_e4m3fn"
    assert lowfp.format("fp4").name == "float4_e2m1fn"
    assert lowfp.format("bf16").name == "bfloat16"
    assert lowfp.format("e8m0").name == "float8_e8m0fnu"
    assert lowfp.format("e4m3b11fnuz").name == "float8_e4m3b11fnuz"
    assert lowfp.format("e4m3ieee").name == "float8_e4m3"
    f = lowfp.format("e3m3")
    assert (f.exp_bits, f.man_bits, f.bias, f.inf, f.nan) == (3, 3, 3, True, "ieee")
    assert f.max == 15.0
    g = lowfp.format("e5m2b11fnuz")
    assert g.bias == 11 and g.nan == "negzero" and lowfp.format(g.name) == g
    assert lowfp.format("e2m1ieee").nan == "ieee"
    for a, target in lowfp.aliases().items():
        assert lowfp.format(a) == lowfp.format(target)


def test_generic_values_table():
    f = lowfp.format("e3m2u")
    assert f.bits == 5 and not f.signed
    assert np.all(np.diff(f.values[np.isfinite(f.values)]) > 0)


@pytest.mark.parametrize(
    "bad,exc,match",
    [
        ("float7", ValueError, "unknown format"),
        ("e9m3", ValueError, "exp_bits"),
        ("e4m3zz", ValueError, "unknown format"),
        ("e4m3fnuzu", ValueError, "nan"),
        (3, TypeError, "fmt"),
    ],
)
def test_bad_names(bad, exc, match):
    with pytest.raises(exc, match=match):
        lowfp.format(bad)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(exp_bits=0, man_bits=3), "exp_bits"),
        (dict(exp_bits=4, man_bits=30), "man_bits"),
        (dict(exp_bits=4, man_bits=3, nan="none", inf=True), "inf"),  # inf needs a NaN code
        (dict(exp_bits=1, man_bits=0, nan="max", inf=True, signed=False), "inf"),
        (dict(exp_bits=4, man_bits=3, nan="negzero", signed=False), "nan"),
        (dict(exp_bits=8, man_bits=3, bias=200), "bias"),
        (dict(exp_bits=4, man_bits=3, nan="weird"), "nan"),
    ],
)
def test_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lowfp.Format(**kwargs)
