# Typed stub of the native module lowfp._core (rust/py.rs), written by hand.
#
# The parameter names, their order and their defaults are those of the #[pyfunction]s
# (`#[pyo3(signature = ...)]` where one is given); tests/test_core_stub.py holds this file to
# the built module, so a function added to rust/py.rs without a stub here fails the tests.
# Types are what the bindings extract: Rust integers as int, f32/f64 as float, &str as str,
# borrowed arrays as NumPy arrays of the dtype the binding reads. Arrays typed `Any` are the
# ones the binding dispatches on (by the `kind` argument or the dtype's width).
#
# Most of these functions are internal: the public API is lowfp.codec / lowfp.qtensor /
# lowfp.optim, which check arguments and allocate outputs before calling here.

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import NDArray

# A format's primary fields: (exp_bits, man_bits, bias, signed, inf, nan kind, subnormals);
# nan kind is "ieee", "max", "negzero" or "none".
_Fields = Tuple[int, int, int, bool, bool, str, bool]
# A blockwise spec: a BlockSpec, or a dict with keys codec, bits, signed, zero, fields, alpha,
# quantile, block, scale, rounding.
_Spec = Union["BlockSpec", Dict[str, Any]]
# An optimizer state: a float32 array, or (spec, packed uint8, scales float32, alphas float32).
_State = Union[
    NDArray[np.float32],
    Tuple[_Spec, NDArray[np.uint8], NDArray[np.float32], NDArray[np.float32]],
]
# (param, grad, momentum_buffer, (lr, momentum, 1 - dampening, weight_decay), nesterov, first,
#  stream, param_stream, kind)
_SgdEntry = Tuple[Any, Any, _State, Tuple[float, float, float, float], bool, bool, int, int, str]
# (1 - lr*wd, l2, 1 - beta1, beta2, 1 - beta2, eps, lr / bc1, sqrt(bc2))
_AdamWScalars = Tuple[float, float, float, float, float, float, float, float]
# (param, grad, exp_avg, exp_avg_sq, scalars, (stream_m, stream_v), param_stream, kind)
_AdamWEntry = Tuple[Any, Any, _State, _State, _AdamWScalars, Tuple[int, int], int, str]
# an AdamW entry, then (max_exp_avg_sq, its stream)
_AmsgradEntry = Tuple[
    Any, Any, _State, _State, _AdamWScalars, Tuple[int, int], int, str, _State, int
]

#: The rounding modes the core accepts, in the order of their codes.
ROUNDINGS: List[str]
#: The blockwise scale rules the core accepts, in the order of their codes.
SCALE_RULES: List[str]

# ---------------------------------------------------------------- formats

class Format:
    """A validated floating-point format, built once per lowfp.Format; compares and hashes by
    its fields."""

    def __new__(
        cls,
        exp_bits: int,
        man_bits: int,
        bias: int,
        signed: bool,
        inf: bool,
        nan: str,
        subnormals: bool,
    ) -> Format: ...
    @staticmethod
    def parse(name: str) -> Format: ...
    @property
    def fields(self) -> _Fields: ...
    @property
    def name(self) -> str: ...
    # (bits, max, min_normal, min_subnormal, eps, emin, emax, max_code_mag)
    @property
    def props(self) -> Tuple[int, float, float, float, float, int, int, int]: ...
    def value(self, code: int) -> float: ...
    def __reduce__(self) -> Tuple[type, _Fields]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

def format_names() -> List[str]: ...
def format_aliases() -> List[Tuple[str, str]]: ...

# ---------------------------------------------------------------- ExMy codec

class Encoder:
    """An ExMy encoder (a format and its rounding options), built once per (format, options)
    and kept on the lowfp.Format; holds the value tables quantize uses."""

    def __new__(
        cls,
        fmt: Format,
        rounding: str = "nearest",
        overflow: str = "nonfinite",
        nan_to_zero: bool = False,
        clamp_negative: bool = False,
    ) -> Encoder: ...
    @property
    def format(self) -> Format: ...
    @property
    def rounding(self) -> str: ...
    @property
    def overflow(self) -> str: ...
    @property
    def nan_to_zero(self) -> bool: ...
    @property
    def clamp_negative(self) -> bool: ...
    def __reduce__(self) -> Tuple[type, Tuple[Format, str, str, bool, bool]]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

def encode(
    x: Any,
    kind: str,
    out: Any,
    encoder: Encoder,
    seed: int,
    stream: int,
    offset: int,
    random_bits: Optional[NDArray[np.uint32]] = None,
) -> None: ...
def decode(codes: Any, out: Any, fmt: Format) -> None: ...
def quantize(
    x: Any,
    kind: str,
    out: Any,
    encoder: Encoder,
    seed: int,
    stream: int,
    offset: int,
    random_bits: Optional[NDArray[np.uint32]] = None,
) -> None: ...

# ---------------------------------------------------------------- packing

def pack_codes(codes: NDArray[np.uint8], bits: int, out: NDArray[np.uint8]) -> None: ...
def unpack_codes(
    packed: NDArray[np.uint8], bits: int, count: int, out: NDArray[np.uint8]
) -> None: ...
def packed_len(count: int, bits: int) -> int: ...

# ---------------------------------------------------------------- table codecs

def linear_levels(bits: int, signed: bool, zero: bool) -> List[float]: ...
def dynamic_levels(bits: int, signed: bool) -> List[float]: ...
def log_levels(bits: int, signed: bool, alpha: float, zero: bool) -> List[float]: ...

class Table:
    """A table codec's levels with their lookup index, built once per table codec."""

    def __new__(cls, levels: Sequence[float]) -> Table: ...
    @property
    def levels(self) -> List[float]: ...
    def __reduce__(self) -> Tuple[type, Tuple[List[float]]]: ...

def table_encode(
    x: NDArray[np.float32],
    table: Table,
    out: NDArray[np.uint8],
    rounding: str,
    seed: int,
    stream: int,
    offset: int,
) -> None: ...

# ---------------------------------------------------------------- blockwise

def blockwise_quantize(
    x: NDArray[np.float32],
    spec: _Spec,
    packed: NDArray[np.uint8],
    scales: NDArray[np.float32],
    alphas: NDArray[np.float32],
    seed: int,
    stream: int,
    row: int = 0,
    nonfinite: str = "error",
) -> float: ...
def blockwise_dequantize(
    packed: NDArray[np.uint8],
    spec: _Spec,
    scales: NDArray[np.float32],
    alphas: NDArray[np.float32],
    global_scale: float,
    out: NDArray[np.float32],
) -> None: ...
def blockwise_layout(spec: _Spec, count: int) -> Tuple[int, int, int, int]: ...

class BlockSpec:
    """A blockwise configuration built once from its spec dict; accepted wherever a spec
    dict is."""

    def __new__(cls, spec: Dict[str, Any]) -> BlockSpec: ...
    def packed_len(self, n: int) -> int: ...
    def num_blocks(self, n: int) -> int: ...
    def num_alphas(self, n: int) -> int: ...
    @property
    def code_bits(self) -> int: ...
    @property
    def block(self) -> int: ...
    def to_dict(self) -> Dict[str, Any]: ...
    def __reduce__(self) -> Tuple[type, Tuple[Dict[str, Any]]]: ...

# ---------------------------------------------------------------- optimizer steps

def adamw_step_group(
    entries: Sequence[_AdamWEntry],
    block: int,
    seed: int,
    param_rounding: str,
    offsets: Optional[Sequence[int]] = None,
) -> None: ...
def adamw_amsgrad_step_group(
    entries: Sequence[_AmsgradEntry],
    block: int,
    seed: int,
    param_rounding: str,
    offsets: Optional[Sequence[int]] = None,
) -> None: ...
def sgd_step_group(
    entries: Sequence[_SgdEntry],
    block: int,
    seed: int,
    param_rounding: str,
    offsets: Optional[Sequence[int]] = None,
) -> None: ...
def muon_momentum(
    grad: NDArray[np.float32],
    buf: _State,
    beta: float,
    nesterov: bool,
    block: int,
    seed: int,
    stream: int,
    offset: int = 0,
) -> None: ...
def all_finite(x: Any, kind: str) -> bool: ...
def all_finite_many(grads: Sequence[Any], kinds: Sequence[str]) -> bool: ...

# ---------------------------------------------------------------- threads and rng

def set_num_threads(n: int) -> None: ...
def num_threads() -> int: ...
def _forked() -> None: ...
def random_bits(
    seed: int, stream: int, offset: int, rounding: str, out: NDArray[np.uint32]
) -> None: ...
