"""The Literal option types of lowfp._types equal the runtime choice lists, so that what a
type checker accepts is what the functions accept."""

import inspect
from typing import get_args

import lowfp
from lowfp import _core, _types
from lowfp.codec import OVERFLOWS, ROUNDINGS
from lowfp.qtensor import SCALES


def test_rounding_is_the_core_list_in_order():
    assert get_args(_types.Rounding) == ROUNDINGS == tuple(_core.ROUNDINGS)


def test_overflow_nan_negative():
    assert get_args(_types.Overflow) == OVERFLOWS
    assert get_args(_types.NanPolicy) == ("error", "zero")
    assert get_args(_types.Negative) == ("error", "clamp")


def test_table_rounding_is_a_subset():
    assert set(get_args(_types.TableRounding)) <= set(ROUNDINGS)


def test_scale_is_qtensor_scales_and_core_rules():
    assert get_args(_types.Scale) == SCALES
    assert set(SCALES) == set(_core.SCALE_RULES)


def test_public_signatures_use_the_literals():
    enc = inspect.signature(lowfp.encode).parameters
    assert enc["rounding"].annotation == "Rounding"
    assert enc["overflow"].annotation == "Overflow"
    assert enc["nan"].annotation == "NanPolicy"
    assert enc["negative"].annotation == "Negative"
    assert inspect.signature(lowfp.quantize).parameters["rounding"].annotation == "Rounding"
    table = inspect.signature(lowfp.Linear.encode).parameters
    assert table["rounding"].annotation == "TableRounding"
