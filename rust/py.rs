//! All PyO3 code, nothing else: borrow NumPy arrays, take contiguous slices, detach
//! from the interpreter (every call, codecs and optimizer steps alike, only when it is big
//! enough to leave the calling thread: `detach_if`), call the core, map its one error type.
//!
//! The Python package (`python/lowfp`) checks dtypes and allocates outputs; this file
//! only dispatches on the dtype it is handed.
//!
//! Typed handles. Formats, ExMy encoders, table codecs and blockwise specs cross the boundary
//! as `#[pyclass]` values (`Format`, `Encoder`, `Table`, `BlockSpec`) built once and kept by
//! the Python objects they belong to (`lowfp.Format._handle`, a format's encoders by option,
//! a table codec's `_table`, a QTensor codec's spec), so a call borrows a ready core value
//! instead of re-parsing a tuple of fields, option strings and a level list every time.
//! Handles are frozen (no borrow flag to check per call), compare and hash by value, and
//! pickle through their constructor arguments. Rejected: one handle per call site (the
//! same format would be validated again wherever it is used) and caches keyed by tuples
//! inside the extension (a hash of the key per call, and no owner to tie their lifetime to).
//!
//! Errors. `From<Error> for PyErr` is the one mapping of core errors: the core only ever
//! reports wrong *values* (ValueError). Wrong *types* are seen only here (an array of the
//! wrong dtype, a spec that is not a dict, an option of the wrong kind) and are reported
//! through `wrong_type` (TypeError). Both say "`arg`: what was expected, what was seen".

use crate::error::Error;
use crate::exmy::{
    self, Bf16Bits, Code, EncodeOptions, Encoder as CoreEncoder, F16Bits, Input, Overflow, Random,
    Rounding,
};
use crate::format::{Format as CoreFormat, NanKind};
use crate::{block, dynamic, formats, linear, logfmt, optim, pack, par, table};
use numpy::{Element, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use std::sync::OnceLock;

// ---------------------------------------------------------------- errors

/// The one place core errors become Python exceptions: a wrong value.
impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        PyValueError::new_err(e.to_string())
    }
}

/// A wrong value found in the binding (same form as a core error).
fn wrong_value(arg: &str, msg: impl Into<String>) -> PyErr {
    Error::value(arg, msg).into()
}

/// An argument of the wrong type (only the binding sees types).
fn wrong_type(arg: &str, msg: impl std::fmt::Display) -> PyErr {
    PyTypeError::new_err(format!("{arg}: {msg}"))
}

type Fields = (u32, u32, i32, bool, bool, String, bool);

fn fmt_of(f: Fields) -> PyResult<CoreFormat> {
    let nan = NanKind::parse(&f.5)?;
    Ok(CoreFormat::new(f.0, f.1, f.2, f.3, f.4, nan, f.6)?)
}

fn fields_of(f: &CoreFormat) -> Fields {
    (
        f.exp_bits(),
        f.man_bits(),
        f.bias(),
        f.signed(),
        f.inf(),
        f.nan().name().to_string(),
        f.subnormals(),
    )
}

fn ro<'py, T: Element>(a: &Bound<'py, PyAny>, arg: &str) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    a.extract::<PyReadonlyArrayDyn<'py, T>>()
        .map_err(|_| wrong_type(arg, format!("expected a numpy array of {}", elem_name::<T>())))
}

/// A writeable array: TypeError for another type or dtype, ValueError when it is read-only
/// (or already borrowed by this call).
fn rw<'py, T: Element>(a: &Bound<'py, PyAny>, arg: &str) -> PyResult<PyReadwriteArrayDyn<'py, T>> {
    let arr = a
        .cast::<PyArrayDyn<T>>()
        .map_err(|_| wrong_type(arg, format!("expected a numpy array of {}", elem_name::<T>())))?;
    arr.try_readwrite().map_err(|_| {
        wrong_value(arg, format!("expected a writeable numpy array of {}", elem_name::<T>()))
    })
}

/// The NumPy name of an element type, for messages.
fn elem_name<T>() -> &'static str {
    match std::any::type_name::<T>() {
        "f32" => "float32",
        "f64" => "float64",
        "u8" => "uint8",
        "u16" => "uint16",
        "u32" => "uint32",
        t => t,
    }
}

fn slice<'a, T: Element>(a: &'a PyReadonlyArrayDyn<'_, T>, arg: &str) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| wrong_value(arg, "expected a C-contiguous array"))
}

fn slice_mut<'a, T: Element>(
    a: &'a mut PyReadwriteArrayDyn<'_, T>,
    arg: &str,
) -> PyResult<&'a mut [T]> {
    a.as_slice_mut().map_err(|_| wrong_value(arg, "expected a C-contiguous array"))
}

/// Reinterpret a u16 slice as float16/bfloat16 bit patterns (both `repr(transparent)`).
fn as_bits<T>(s: &[u16]) -> &[T] {
    // SAFETY: F16Bits and Bf16Bits are #[repr(transparent)] wrappers of u16.
    unsafe { std::slice::from_raw_parts(s.as_ptr() as *const T, s.len()) }
}

/// Run `f` without the GIL when the call is big enough to leave the calling thread (more
/// than `par::SERIAL_MAX` elements), else holding it.
///
/// A small call takes about a microsecond. Releasing the GIL for it costs little alone
/// (`all_finite` of 64 values: 0.21 vs 0.17 µs), but next to a busy Python thread (a data
/// loader, a logger) taking it back waits for that thread to yield: 52 µs vs 0.20 µs per call
/// measured, 70 vs 0.8 µs for a one-tensor AdamW step. Big calls release it as before.
fn detach_if<T: Send>(py: Python<'_>, elems: usize, f: impl FnOnce() -> T + Send) -> T {
    if par::serial(elems) {
        f()
    } else {
        py.detach(f)
    }
}

fn py_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

// ---------------------------------------------------------------- formats

/// A validated floating-point format (the core's `Format`), built once per Python
/// `lowfp.Format` and passed to every codec call.
#[pyclass(frozen, eq, hash, name = "Format", module = "lowfp._core")]
#[derive(PartialEq, Eq, Hash, Clone)]
struct Format {
    f: CoreFormat,
}

#[pymethods]
impl Format {
    #[new]
    #[pyo3(signature = (exp_bits, man_bits, bias, signed, inf, nan, subnormals))]
    fn new(
        exp_bits: u32,
        man_bits: u32,
        bias: i32,
        signed: bool,
        inf: bool,
        nan: &str,
        subnormals: bool,
    ) -> PyResult<Self> {
        let nan = NanKind::parse(nan)?;
        Ok(Format { f: CoreFormat::new(exp_bits, man_bits, bias, signed, inf, nan, subnormals)? })
    }

    /// The format of a name, alias or spec string (`"e4m3"`, `"e5m2b11"`, `"p3109_k8p4"`).
    #[staticmethod]
    fn parse(name: &str) -> PyResult<Self> {
        Ok(Format { f: formats::parse(name)? })
    }

    /// (exp_bits, man_bits, bias, signed, inf, nan, subnormals).
    #[getter]
    fn fields(&self) -> Fields {
        fields_of(&self.f)
    }

    /// The canonical name.
    #[getter]
    fn name(&self) -> String {
        formats::name(&self.f)
    }

    /// (bits, max, min_normal, min_subnormal, eps, emin, emax, max_code_mag).
    #[getter]
    #[allow(clippy::type_complexity)]
    fn props(&self) -> (u32, f64, f64, f64, f64, i32, i32, u32) {
        let f = &self.f;
        (
            f.bits(),
            f.max(),
            f.min_normal(),
            f.min_subnormal(),
            f.eps(),
            f.emin(),
            f.emax(),
            f.max_code_mag(),
        )
    }

    /// The exact value of one code.
    fn value(&self, code: u32) -> PyResult<f64> {
        let n = self.f.num_codes();
        if code as u64 >= n {
            return Err(wrong_value("code", format!("expected 0..{}, got {code}", n - 1)));
        }
        Ok(self.f.decode_f64(code))
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let fields = slf.get().fields();
        Ok((slf.get_type().into_any(), fields.into_pyobject(slf.py())?))
    }

    fn __repr__(&self) -> String {
        format!("<Format {}>", formats::name(&self.f))
    }
}

#[pyfunction]
fn format_names() -> Vec<&'static str> {
    formats::all().into_iter().map(|(n, _)| n).collect()
}

#[pyfunction]
fn format_aliases() -> Vec<(&'static str, &'static str)> {
    formats::aliases().to_vec()
}

// ---------------------------------------------------------------- ExMy codec

/// An ExMy encoder: a format with its rounding and special-value options, built once per
/// (format, options) and kept on the Python `Format`. Also holds, built on first use, the
/// value tables `quantize` looks rounded codes up in.
#[pyclass(frozen, name = "Encoder", module = "lowfp._core")]
struct Encoder {
    enc: CoreEncoder,
    fmt: Py<Format>,
    /// Value of every code as float32 / float64 (formats of at most 16 bits).
    lut32: OnceLock<Vec<f32>>,
    lut64: OnceLock<Vec<f64>>,
    /// Bit pattern of every code's value as float16 / bfloat16 (`lut_bits`).
    lut16: OnceLock<Vec<u16>>,
    lutbf: OnceLock<Vec<u16>>,
}

#[pymethods]
impl Encoder {
    #[new]
    #[pyo3(signature = (fmt, rounding="nearest", overflow="nonfinite", nan_to_zero=false, clamp_negative=false))]
    fn new(
        fmt: Bound<'_, Format>,
        rounding: &str,
        overflow: &str,
        nan_to_zero: bool,
        clamp_negative: bool,
    ) -> PyResult<Self> {
        let opts = EncodeOptions {
            rounding: Rounding::parse(rounding)?,
            overflow: Overflow::parse(overflow)?,
            nan_to_zero,
            clamp_negative,
        };
        Ok(Encoder {
            enc: CoreEncoder::new(fmt.get().f, opts),
            fmt: fmt.unbind(),
            lut32: OnceLock::new(),
            lut64: OnceLock::new(),
            lut16: OnceLock::new(),
            lutbf: OnceLock::new(),
        })
    }

    /// The target format.
    #[getter]
    fn format(&self, py: Python<'_>) -> Py<Format> {
        self.fmt.clone_ref(py)
    }

    /// The rounding mode's name.
    #[getter]
    fn rounding(&self) -> &'static str {
        rounding_name(self.enc.options().rounding)
    }

    /// "nonfinite" or "saturate".
    #[getter]
    fn overflow(&self) -> &'static str {
        match self.enc.options().overflow {
            Overflow::NonFinite => "nonfinite",
            Overflow::Saturate => "saturate",
        }
    }

    #[getter]
    fn nan_to_zero(&self) -> bool {
        self.enc.options().nan_to_zero
    }

    #[getter]
    fn clamp_negative(&self) -> bool {
        self.enc.options().clamp_negative
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<(Bound<'py, PyAny>, EncoderArgs)> {
        let e = slf.get();
        let py = slf.py();
        Ok((
            slf.get_type().into_any(),
            (e.format(py), e.rounding(), e.overflow(), e.nan_to_zero(), e.clamp_negative()),
        ))
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<Encoder>().is_ok_and(|o| {
            let o = o.get();
            o.enc.format() == self.enc.format() && o.enc.options() == self.enc.options()
        })
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.enc.format().hash(&mut h);
        let o = self.enc.options();
        (o.rounding, o.overflow == Overflow::Saturate, o.nan_to_zero, o.clamp_negative)
            .hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        format!(
            "<Encoder {} rounding={} overflow={} nan_to_zero={} clamp_negative={}>",
            formats::name(&self.enc.format()),
            self.rounding(),
            self.overflow(),
            py_bool(self.nan_to_zero()),
            py_bool(self.clamp_negative())
        )
    }
}

/// The constructor arguments of an Encoder (pickling).
type EncoderArgs = (Py<Format>, &'static str, &'static str, bool, bool);

fn rounding_name(r: Rounding) -> &'static str {
    Rounding::ALL.iter().find(|(_, m)| *m == r).map_or("?", |e| e.0)
}

fn random_of<'a>(bits: Option<&'a [u32]>, seed: u64, stream: u64, offset: u64) -> Random<'a> {
    match bits {
        Some(b) => Random::Bits(b),
        None => Random::Philox { seed, stream, offset },
    }
}

/// Run `$body` with `$xs` bound to the input slice typed by `kind`.
macro_rules! with_input {
    ($x:expr, $kind:expr, $xs:ident => $body:expr) => {
        match $kind {
            "float32" => {
                let a = ro::<f32>($x, "x")?;
                let $xs = slice(&a, "x")?;
                $body
            }
            "float64" => {
                let a = ro::<f64>($x, "x")?;
                let $xs = slice(&a, "x")?;
                $body
            }
            "float16" => {
                let a = ro::<u16>($x, "x")?;
                let $xs: &[F16Bits] = as_bits(slice(&a, "x")?);
                $body
            }
            "bfloat16" => {
                let a = ro::<u16>($x, "x")?;
                let $xs: &[Bf16Bits] = as_bits(slice(&a, "x")?);
                $body
            }
            k => {
                return Err(wrong_type(
                    "x",
                    format!(
                        "expected kind 'float32', 'float64', 'float16' or 'bfloat16', got {k:?}"
                    ),
                ))
            }
        }
    };
}

fn encode_into<I: Input>(
    py: Python<'_>,
    enc: &CoreEncoder,
    xs: &[I],
    out: &Bound<'_, PyAny>,
    random: Random,
) -> PyResult<()> {
    let width = out.getattr("dtype")?.getattr("itemsize")?.extract::<usize>()?;
    macro_rules! go {
        ($t:ty) => {{
            let mut o = rw::<$t>(out, "out")?;
            let os = slice_mut(&mut o, "out")?;
            Ok(detach_if(py, xs.len(), || exmy::encode(enc, xs, os, random))?)
        }};
    }
    match width {
        1 => go!(u8),
        2 => go!(u16),
        4 => go!(u32),
        w => Err(wrong_type(
            "out",
            format!("expected uint8, uint16 or uint32 codes, got {w}-byte items"),
        )),
    }
}

/// Encode `x` (float values of `kind`) into `out` (codes) with `encoder`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (x, kind, out, encoder, seed, stream, offset, random_bits=None))]
fn encode(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    kind: &str,
    out: &Bound<'_, PyAny>,
    encoder: PyRef<'_, Encoder>,
    seed: u64,
    stream: u64,
    offset: u64,
    random_bits: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let enc = &encoder.enc;
    let rb = random_bits.map(|r| ro::<u32>(r, "random_bits")).transpose()?;
    let rbs = rb.as_ref().map(|r| slice(r, "random_bits")).transpose()?;
    let random = random_of(rbs, seed, stream, offset);
    with_input!(x, kind, xs => encode_into(py, enc, xs, out, random))
}

fn decode_codes<C: Code + Element>(
    py: Python<'_>,
    f: &CoreFormat,
    codes: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let c = ro::<C>(codes, "codes")?;
    let cs = slice(&c, "codes")?;
    if let Ok(mut o) = out.extract::<PyReadwriteArrayDyn<f32>>() {
        let os = slice_mut(&mut o, "out")?;
        return Ok(detach_if(py, cs.len(), || exmy::decode(f, cs, os))?);
    }
    let mut o = rw::<f64>(out, "out")?;
    let os = slice_mut(&mut o, "out")?;
    Ok(detach_if(py, cs.len(), || exmy::decode(f, cs, os))?)
}

/// Decode `codes` (uint8/16/32) of format `fmt` into `out` (float32 or float64).
#[pyfunction]
fn decode(
    py: Python<'_>,
    codes: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    fmt: PyRef<'_, Format>,
) -> PyResult<()> {
    let f = &fmt.f;
    match codes.getattr("dtype")?.getattr("itemsize")?.extract::<usize>()? {
        1 => decode_codes::<u8>(py, f, codes, out),
        2 => decode_codes::<u16>(py, f, codes, out),
        4 => decode_codes::<u32>(py, f, codes, out),
        w => Err(wrong_type(
            "codes",
            format!("expected uint8, uint16 or uint32, got {w}-byte items"),
        )),
    }
}

/// Output bit pattern (float16/bfloat16) of every code, by encoding each exact value.
fn lut_bits(f: &CoreFormat, target: &str) -> crate::error::Result<Vec<u16>> {
    let t = formats::parse(target)?;
    let e = CoreEncoder::new(t, EncodeOptions { nan_to_zero: false, ..Default::default() });
    (0..f.num_codes() as u32)
        .map(|c| {
            let v = [f.decode_f64(c)];
            let mut o = [0u16];
            exmy::encode(&e, &v, &mut o, Random::Bits(&[0])).map(|_| o[0])
        })
        .collect()
}

/// A value table built once per encoder (`None` when `build` fails: reported by the caller).
fn lut_once<T>(
    cell: &OnceLock<Vec<T>>,
    build: impl FnOnce() -> crate::error::Result<Vec<T>>,
) -> PyResult<&[T]> {
    if let Some(v) = cell.get() {
        return Ok(v);
    }
    let v = build()?;
    Ok(cell.get_or_init(|| v))
}

/// Round `x` to the encoder's format and write the rounded values into `out` (x's kind).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (x, kind, out, encoder, seed, stream, offset, random_bits=None))]
fn quantize(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    kind: &str,
    out: &Bound<'_, PyAny>,
    encoder: PyRef<'_, Encoder>,
    seed: u64,
    stream: u64,
    offset: u64,
    random_bits: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let e = &*encoder;
    let enc = &e.enc;
    let f = enc.format();
    let rb = random_bits.map(|r| ro::<u32>(r, "random_bits")).transpose()?;
    let rbs = rb.as_ref().map(|r| slice(r, "random_bits")).transpose()?;
    let random = random_of(rbs, seed, stream, offset);
    let small = f.bits() <= 16;
    let values = |c: u32| f.decode_f64(c);
    with_input!(x, kind, xs => {
        match kind {
            "float32" => {
                let lut = if small {
                    Some(lut_once(&e.lut32, || Ok((0..f.num_codes() as u32).map(|c| f.decode_f32(c)).collect()))?)
                } else {
                    None
                };
                let mut o = rw::<f32>(out, "out")?;
                let os = slice_mut(&mut o, "out")?;
                Ok(detach_if(py, xs.len(), || exmy::quantize(enc, xs, os, random, lut, crate::format::f32_exact))?)
            }
            "float64" => {
                let lut = if small {
                    Some(lut_once(&e.lut64, || Ok((0..f.num_codes() as u32).map(values).collect()))?)
                } else {
                    None
                };
                let mut o = rw::<f64>(out, "out")?;
                let os = slice_mut(&mut o, "out")?;
                Ok(detach_if(py, xs.len(), || exmy::quantize(enc, xs, os, random, lut, |v| v))?)
            }
            k => {
                if !small {
                    return Err(wrong_value("fmt", format!("a {}-bit format is not exact in {k}", f.bits())));
                }
                let cell = if k == "float16" { &e.lut16 } else { &e.lutbf };
                let lut = lut_once(cell, || lut_bits(&f, k))?;
                let mut o = rw::<u16>(out, "out")?;
                let os = slice_mut(&mut o, "out")?;
                Ok(detach_if(py, xs.len(), || exmy::quantize(enc, xs, os, random, Some(lut), |_| 0))?)
            }
        }
    })
}

// ---------------------------------------------------------------- packing

#[pyfunction]
fn pack_codes(
    py: Python<'_>,
    codes: PyReadonlyArrayDyn<'_, u8>,
    bits: u32,
    mut out: PyReadwriteArrayDyn<'_, u8>,
) -> PyResult<()> {
    let cs = slice(&codes, "codes")?;
    let os = slice_mut(&mut out, "out")?;
    let n = cs.len();
    detach_if(py, n, || par::install_if(n, || pack::pack(cs, bits, os))).map_err(PyErr::from)
}

#[pyfunction]
fn unpack_codes(
    py: Python<'_>,
    packed: PyReadonlyArrayDyn<'_, u8>,
    bits: u32,
    count: usize,
    mut out: PyReadwriteArrayDyn<'_, u8>,
) -> PyResult<()> {
    let ps = slice(&packed, "packed")?;
    let os = slice_mut(&mut out, "out")?;
    detach_if(py, count, || par::install_if(count, || pack::unpack(ps, bits, count, os)))
        .map_err(PyErr::from)
}

#[pyfunction]
fn packed_len(count: usize, bits: u32) -> PyResult<usize> {
    if !(1..=8).contains(&bits) {
        return Err(wrong_value("bits", format!("expected 1..=8, got {bits}")));
    }
    Ok(pack::packed_len(count, bits))
}

// ---------------------------------------------------------------- table codecs

#[pyfunction]
fn linear_levels(bits: u32, signed: bool, zero: bool) -> PyResult<Vec<f32>> {
    linear::linear_levels(bits, signed, zero).map_err(PyErr::from)
}

#[pyfunction]
fn dynamic_levels(bits: u32, signed: bool) -> PyResult<Vec<f32>> {
    dynamic::dynamic_levels(bits, signed).map_err(PyErr::from)
}

#[pyfunction]
fn log_levels(bits: u32, signed: bool, alpha: f32, zero: bool) -> PyResult<Vec<f32>> {
    logfmt::log_levels(bits, signed, alpha, zero).map_err(PyErr::from)
}

/// A table codec (ascending levels; the code of a level is its index), built once per
/// Python table codec: tables of more than 32 levels build a 256 KiB lookup index.
#[pyclass(frozen, name = "Table", module = "lowfp._core")]
struct Table {
    t: table::Table,
}

#[pymethods]
impl Table {
    #[new]
    fn new(levels: Vec<f32>) -> PyResult<Self> {
        Ok(Table { t: table::Table::new(levels)? })
    }

    /// The levels, ascending.
    #[getter]
    fn levels(&self) -> Vec<f32> {
        self.t.levels().to_vec()
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> (Bound<'py, PyAny>, (Vec<f32>,)) {
        (slf.get_type().into_any(), (slf.get().levels(),))
    }

    fn __repr__(&self) -> String {
        format!("<Table of {} levels>", self.t.levels().len())
    }
}

/// Encode float32 `x` into uint8 `out` with table codec `table`.
#[pyfunction]
#[pyo3(signature = (x, table, out, rounding, seed, stream, offset))]
#[allow(clippy::too_many_arguments)]
fn table_encode(
    py: Python<'_>,
    x: PyReadonlyArrayDyn<'_, f32>,
    table: PyRef<'_, Table>,
    mut out: PyReadwriteArrayDyn<'_, u8>,
    rounding: &str,
    seed: u64,
    stream: u64,
    offset: u64,
) -> PyResult<()> {
    let t = &table.t;
    let mode = Rounding::parse(rounding)?;
    let xs = slice(&x, "x")?;
    let os = slice_mut(&mut out, "out")?;
    Ok(detach_if(py, xs.len(), || block::table_encode(t, xs, os, mode, seed, stream, offset))?)
}

// ---------------------------------------------------------------- blockwise

#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (x, spec, packed, scales, alphas, seed, stream, row=0, nonfinite="error"))]
fn blockwise_quantize(
    py: Python<'_>,
    x: PyReadonlyArrayDyn<'_, f32>,
    spec: &Bound<'_, PyAny>,
    mut packed: PyReadwriteArrayDyn<'_, u8>,
    mut scales: PyReadwriteArrayDyn<'_, f32>,
    mut alphas: PyReadwriteArrayDyn<'_, f32>,
    seed: u64,
    stream: u64,
    row: usize,
    nonfinite: &str,
) -> PyResult<f32> {
    let spec = spec_arg(spec)?;
    let spec = spec.get();
    let policy = block::NonFinite::parse(nonfinite)?;
    let xs = slice(&x, "x")?;
    let ps = slice_mut(&mut packed, "packed")?;
    let ss = slice_mut(&mut scales, "scales")?;
    let al = slice_mut(&mut alphas, "alphas")?;
    detach_if(py, xs.len(), || {
        block::quantize_rows(spec, xs, row, policy, ps, ss, al, seed, stream)
    })
    .map_err(PyErr::from)
}

#[pyfunction]
fn blockwise_dequantize(
    py: Python<'_>,
    packed: PyReadonlyArrayDyn<'_, u8>,
    spec: &Bound<'_, PyAny>,
    scales: PyReadonlyArrayDyn<'_, f32>,
    alphas: PyReadonlyArrayDyn<'_, f32>,
    global_scale: f32,
    mut out: PyReadwriteArrayDyn<'_, f32>,
) -> PyResult<()> {
    let spec = spec_arg(spec)?;
    let spec = spec.get();
    let ps = slice(&packed, "packed")?;
    let ss = slice(&scales, "scales")?;
    let al = slice(&alphas, "alphas")?;
    let os = slice_mut(&mut out, "out")?;
    detach_if(py, os.len(), || block::dequantize(spec, ps, ss, al, global_scale, os))
        .map_err(PyErr::from)
}

/// A block spec from its Python description: a dict with keys codec, bits, signed,
/// zero, fields, alpha, quantile, block, scale, rounding.
fn block_spec(d: &Bound<'_, PyAny>) -> PyResult<block::Spec> {
    let get = |k: &str| d.get_item(k);
    let codec: String = get("codec")?.extract()?;
    let elem = match codec.as_str() {
        "exmy" => block::Elem::ExMy(fmt_of(get("fields")?.extract()?)?),
        "linear" => block::Elem::Linear {
            bits: get("bits")?.extract()?,
            signed: get("signed")?.extract()?,
            zero: get("zero")?.extract()?,
        },
        "dynamic" => block::Elem::Dynamic {
            bits: get("bits")?.extract()?,
            signed: get("signed")?.extract()?,
        },
        "log" => block::Elem::Log {
            bits: get("bits")?.extract()?,
            signed: get("signed")?.extract()?,
            zero: get("zero")?.extract()?,
            alpha: get("alpha")?.extract()?,
            quantile: get("quantile")?.extract()?,
        },
        c => {
            return Err(wrong_value(
                "codec",
                format!("expected 'exmy', 'linear', 'dynamic' or 'log', got {c:?}"),
            ))
        }
    };
    block::Spec::new(
        elem,
        get("block")?.extract()?,
        block::ScaleKind::parse(&get("scale")?.extract::<String>()?)?,
        Rounding::parse(&get("rounding")?.extract::<String>()?)?,
    )
    .map_err(PyErr::from)
}

/// (packed bytes, blocks, bases, code bits) of `count` elements under `spec` (a BlockSpec
/// or a spec dict).
#[pyfunction]
fn blockwise_layout(spec: &Bound<'_, PyAny>, count: usize) -> PyResult<(usize, usize, usize, u32)> {
    let spec = spec_arg(spec)?;
    let spec = spec.get();
    Ok((spec.packed_len(count), spec.num_blocks(count), spec.num_alphas(count), spec.code_bits()))
}

// A spec dict is parsed into a `block::Spec` whose tables (a 256 KiB index for 8-bit
// dynamic codes) are built on use; parsing it again on every optimizer step cost ~26 µs per
// state. `BlockSpec` is that Spec built once and kept by Python: every call that takes a
// spec dict also takes a BlockSpec and borrows its Spec (frozen, so no borrow flag).
// Rejected: a cache keyed by the dict (hashing a dict per call, and invalidation when a
// caller mutates it), and Arc<Spec> clones (a borrow for the call is enough).

/// A blockwise configuration built once from its spec dict (keys codec, bits, signed, zero,
/// fields, alpha, quantile, block, scale, rounding); accepted wherever a spec dict is.
#[pyclass(frozen, name = "BlockSpec", module = "lowfp._core")]
struct BlockSpec {
    spec: block::Spec,
    /// A copy of the dict it was built from (pickling, copy).
    dict: Py<PyDict>,
}

#[pymethods]
impl BlockSpec {
    #[new]
    fn new(spec: &Bound<'_, PyAny>) -> PyResult<Self> {
        let dict = spec
            .cast::<PyDict>()
            .map_err(|_| wrong_type("spec", "expected a dict or a BlockSpec"))?
            .copy()?;
        Ok(BlockSpec { spec: block_spec(dict.as_any())?, dict: dict.unbind() })
    }

    /// Bytes of packed codes for `n` elements.
    fn packed_len(&self, n: usize) -> usize {
        self.spec.packed_len(n)
    }

    /// Number of blocks (and scales) for `n` elements.
    fn num_blocks(&self, n: usize) -> usize {
        self.spec.num_blocks(n)
    }

    /// Number of per-block bases stored for `n` elements (quantile log codec), else 0.
    fn num_alphas(&self, n: usize) -> usize {
        self.spec.num_alphas(n)
    }

    /// Bits per element code.
    #[getter]
    fn code_bits(&self) -> u32 {
        self.spec.code_bits()
    }

    /// Elements per block.
    #[getter]
    fn block(&self) -> usize {
        self.spec.block()
    }

    /// A copy of the spec dict it was built from.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.dict.bind(py).copy()
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (Bound<'py, PyDict>,))> {
        Ok((slf.get_type().into_any(), (slf.get().dict.bind(slf.py()).copy()?,)))
    }

    fn __repr__(&self) -> String {
        let s = &self.spec;
        let elem = match s.elem() {
            block::Elem::ExMy(f) => format!("exmy {}", formats::name(&f)),
            block::Elem::Linear { bits, signed, zero } => {
                format!("linear bits={bits} signed={} zero={}", py_bool(signed), py_bool(zero))
            }
            block::Elem::Dynamic { bits, signed } => {
                format!("dynamic bits={bits} signed={}", py_bool(signed))
            }
            block::Elem::Log { bits, signed, zero, alpha, quantile } => format!(
                "log bits={bits} signed={} zero={} alpha={alpha} quantile={quantile}",
                py_bool(signed),
                py_bool(zero)
            ),
        };
        let scale = s.scale().name();
        let rounding = Rounding::ALL.iter().find(|(_, r)| *r == s.rounding()).map_or("?", |e| e.0);
        format!("<BlockSpec {elem} block={} scale={scale} rounding={rounding}>", s.block())
    }
}

/// A spec argument: a BlockSpec (borrowed) or a dict (parsed for this call).
enum SpecArg<'py> {
    Handle(Bound<'py, BlockSpec>),
    Parsed(Box<block::Spec>),
}

impl SpecArg<'_> {
    fn get(&self) -> &block::Spec {
        match self {
            SpecArg::Handle(h) => &h.get().spec,
            SpecArg::Parsed(s) => s,
        }
    }
}

fn spec_arg<'py>(obj: &Bound<'py, PyAny>) -> PyResult<SpecArg<'py>> {
    match obj.cast::<BlockSpec>() {
        Ok(h) => Ok(SpecArg::Handle(h.clone())),
        Err(_) => Ok(SpecArg::Parsed(Box::new(block_spec(obj)?))),
    }
}

// ---------------------------------------------------------------- optimizer steps

/// The arrays of one state, borrowed from Python: a float32 array, or
/// (BlockSpec or spec dict, packed uint8, scales float32, alphas float32).
enum StateArrays<'py> {
    F32(PyReadwriteArrayDyn<'py, f32>),
    Quantized(
        SpecArg<'py>,
        PyReadwriteArrayDyn<'py, u8>,
        PyReadwriteArrayDyn<'py, f32>,
        PyReadwriteArrayDyn<'py, f32>,
    ),
}

fn state_arrays<'py>(obj: &Bound<'py, PyAny>, arg: &str) -> PyResult<StateArrays<'py>> {
    if let Ok(a) = obj.extract::<PyReadwriteArrayDyn<'py, f32>>() {
        return Ok(StateArrays::F32(a));
    }
    let (spec, packed, scales, alphas): (
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
        Bound<'py, PyAny>,
    ) = obj.extract().map_err(|_| {
        wrong_type(arg, "expected a float32 array or (spec, packed, scales, alphas)")
    })?;
    Ok(StateArrays::Quantized(
        spec_arg(&spec)?,
        rw::<u8>(&packed, arg)?,
        rw::<f32>(&scales, arg)?,
        rw::<f32>(&alphas, arg)?,
    ))
}

fn state_of<'a>(a: &'a mut StateArrays<'_>, arg: &str) -> PyResult<optim::State<'a>> {
    Ok(match a {
        StateArrays::F32(x) => optim::State::F32(slice_mut(x, arg)?),
        StateArrays::Quantized(spec, p, s, al) => optim::State::Quantized {
            spec: spec.get(),
            packed: slice_mut(p, arg)?,
            scales: slice_mut(s, arg)?,
            alphas: slice_mut(al, arg)?,
        },
    })
}

/// A parameter and its gradient from Python: float32 arrays, or uint16 arrays holding
/// bfloat16 or float16 bits, as `kind` says ("float32", "bfloat16", "float16").
enum ParamArrays<'py> {
    F32(PyReadwriteArrayDyn<'py, f32>, PyReadonlyArrayDyn<'py, f32>),
    Half(optim::Half, PyReadwriteArrayDyn<'py, u16>, PyReadonlyArrayDyn<'py, u16>),
}

fn half_kind(kind: &str) -> PyResult<Option<optim::Half>> {
    match kind {
        "float32" => Ok(None),
        "bfloat16" => Ok(Some(optim::Half::Bf16)),
        "float16" => Ok(Some(optim::Half::F16)),
        k => Err(wrong_type(
            "param",
            format!("expected float32, bfloat16 or float16 parameters, got {k}"),
        )),
    }
}

fn param_arrays<'py>(
    p: &Bound<'py, PyAny>,
    g: &Bound<'py, PyAny>,
    kind: &str,
) -> PyResult<ParamArrays<'py>> {
    Ok(match half_kind(kind)? {
        None => ParamArrays::F32(rw::<f32>(p, "param")?, ro::<f32>(g, "grad")?),
        Some(h) => ParamArrays::Half(h, rw::<u16>(p, "param")?, ro::<u16>(g, "grad")?),
    })
}

/// Elements of a parameter.
fn param_len(a: &ParamArrays<'_>) -> usize {
    match a {
        ParamArrays::F32(p, _) => p.as_array().len(),
        ParamArrays::Half(_, p, _) => p.as_array().len(),
    }
}

fn param_of<'a>(
    a: &'a mut ParamArrays<'_>,
    rounding: Rounding,
    stream: u64,
) -> PyResult<(optim::Param<'a>, optim::Grad<'a>)> {
    Ok(match a {
        ParamArrays::F32(p, g) => {
            (optim::Param::F32(slice_mut(p, "param")?), optim::Grad::F32(slice(g, "grad")?))
        }
        ParamArrays::Half(kind, p, g) => (
            optim::Param::Half { kind: *kind, bits: slice_mut(p, "param")?, rounding, stream },
            optim::Grad::Half(*kind, slice(g, "grad")?),
        ),
    })
}

/// One parameter of a batched SGD call: (param, grad, momentum_buffer,
/// (lr, momentum, 1 − dampening, weight_decay), nesterov, first, stream, param_stream, kind).
type SgdEntry<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    (f32, f32, f32, f32),
    bool,
    bool,
    u64,
    u64,
    String,
);

/// Fused SGD steps for a whole param group in one call (one parallel pass, GIL released;
/// small groups on the calling thread, GIL held). A state is a float32 array or
/// (BlockSpec or spec dict, packed, scales, alphas).
/// `offsets`: per entry, the index of its element 0 in the keying of random bits (a shard's
/// offset in the whole tensor; default 0).
#[pyfunction]
#[pyo3(signature = (entries, block, seed, param_rounding, offsets=None))]
fn sgd_step_group(
    py: Python<'_>,
    entries: Vec<SgdEntry<'_>>,
    block: usize,
    seed: u64,
    param_rounding: &str,
    offsets: Option<Vec<usize>>,
) -> PyResult<()> {
    let offsets = entry_offsets(offsets, entries.len())?;
    let mut arrays = Vec::with_capacity(entries.len());
    for (p, g, b, (lr, momentum, w, weight_decay), nesterov, first, stream, pstream, kind) in
        &entries
    {
        let hp = optim::Sgd {
            lr: *lr,
            momentum: *momentum,
            w: *w,
            weight_decay: *weight_decay,
            nesterov: *nesterov,
            first: *first,
        };
        let states = [state_arrays(b, SGD_STATES[0])?];
        arrays.push((param_arrays(p, g, kind)?, states, hp, [*stream], *pstream));
    }
    run_group(py, &mut arrays, SGD_STATES, &offsets, param_rounding, |items| {
        optim::sgd_steps(items, block, seed)
    })
}

/// Muon's momentum update; the direction replaces `grad` in place. `offset`: as in
/// `sgd_step_group`.
#[pyfunction]
#[pyo3(signature = (grad, buf, beta, nesterov, block, seed, stream, offset=0))]
#[allow(clippy::too_many_arguments)]
fn muon_momentum(
    py: Python<'_>,
    mut grad: PyReadwriteArrayDyn<'_, f32>,
    buf: &Bound<'_, PyAny>,
    beta: f32,
    nesterov: bool,
    block: usize,
    seed: u64,
    stream: u64,
    offset: usize,
) -> PyResult<()> {
    let mut ba = state_arrays(buf, "momentum_buffer")?;
    let b = state_of(&mut ba, "momentum_buffer")?;
    let gs = slice_mut(&mut grad, "grad")?;
    detach_if(py, gs.len(), || {
        optim::muon_momentum(beta, nesterov, gs, b, block, seed, stream, offset)
    })
    .map_err(PyErr::from)
}

/// The AdamW scalars of an entry: (1 − lr·wd, l2, 1 − β1, β2, 1 − β2, eps, lr / bc1,
/// sqrt(bc2)).
type AdamWScalars = (f32, f32, f32, f32, f32, f32, f32, f32);

/// One parameter of a batched AdamW call: (param, grad, exp_avg, exp_avg_sq, scalars,
/// (stream_m, stream_v), param_stream, kind).
type AdamWEntry<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    AdamWScalars,
    (u64, u64),
    u64,
    String,
);

/// One parameter of a batched AMSGrad call: an AdamW entry, then (max_exp_avg_sq, its
/// stream).
type AmsgradEntry<'py> = (
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    Bound<'py, PyAny>,
    AdamWScalars,
    (u64, u64),
    u64,
    String,
    Bound<'py, PyAny>,
    u64,
);

const ADAMW_STATES: [&str; 3] = ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"];
const SGD_STATES: [&str; 1] = ["momentum_buffer"];

/// One borrowed entry of a step group: param arrays, K state arrays, the step's scalars, K
/// streams, param stream.
type StepArrays<'py, const K: usize, T> =
    (ParamArrays<'py>, [StateArrays<'py>; K], T, [u64; K], u64);

fn adamw_scalars(s: AdamWScalars) -> optim::AdamW {
    let (decay, l2, w1, beta2, w2, eps, step_size, bc2_sqrt) = s;
    optim::AdamW { decay, l2, w1, beta2, w2, eps, step_size, bc2_sqrt }
}

/// Borrow the slices of every entry and run `steps` on them (GIL released when big);
/// `names` are the states' argument names, for error messages.
fn run_group<const K: usize, T: Copy + Send>(
    py: Python<'_>,
    arrays: &mut [StepArrays<'_, K, T>],
    names: [&'static str; K],
    offsets: &[usize],
    param_rounding: &str,
    steps: impl FnOnce(Vec<optim::Item<'_, K, T>>) -> crate::error::Result<()> + Send,
) -> PyResult<()> {
    let rounding = Rounding::parse(param_rounding)?;
    if !(rounding == Rounding::Nearest || rounding.is_stochastic()) {
        return Err(wrong_value(
            "param_rounding",
            format!("expected 'nearest', 'stochastic' or 'stochastic16', got {param_rounding:?}"),
        ));
    }
    let total = arrays.iter().map(|a| param_len(&a.0)).sum();
    let mut items = Vec::with_capacity(arrays.len());
    for (pa, sts, hp, streams, pstream) in arrays.iter_mut() {
        let (param, grad) = param_of(pa, rounding, *pstream)?;
        let mut states = Vec::with_capacity(K);
        for ((st, name), stream) in sts.iter_mut().zip(names).zip(streams) {
            states.push((state_of(st, name)?, name, *stream));
        }
        let states: [_; K] =
            states.try_into().map_err(|_| wrong_value("internal", "state count differs from K"))?;
        let offset = offsets[items.len()];
        items.push(optim::Item { param, grad: Some(grad), states, ctx: *hp, offset });
    }
    detach_if(py, total, || steps(items)).map_err(PyErr::from)
}

/// Fused AdamW steps for a whole param group in one call (one parallel pass, GIL released;
/// small groups on the calling thread, GIL held). States as in `sgd_step_group`.
/// `offsets`: as in `sgd_step_group`.
#[pyfunction]
#[pyo3(signature = (entries, block, seed, param_rounding, offsets=None))]
fn adamw_step_group(
    py: Python<'_>,
    entries: Vec<AdamWEntry<'_>>,
    block: usize,
    seed: u64,
    param_rounding: &str,
    offsets: Option<Vec<usize>>,
) -> PyResult<()> {
    let offsets = entry_offsets(offsets, entries.len())?;
    let mut arrays = Vec::with_capacity(entries.len());
    for (p, g, m, v, scalars, streams, pstream, kind) in &entries {
        let states = [state_arrays(m, ADAMW_STATES[0])?, state_arrays(v, ADAMW_STATES[1])?];
        let streams = [streams.0, streams.1];
        arrays.push((
            param_arrays(p, g, kind)?,
            states,
            adamw_scalars(*scalars),
            streams,
            *pstream,
        ));
    }
    run_group(
        py,
        &mut arrays,
        [ADAMW_STATES[0], ADAMW_STATES[1]],
        &offsets,
        param_rounding,
        |items| optim::adamw_steps(items, block, seed),
    )
}

/// `adamw_step_group` with AMSGrad: each entry carries a third state, the running maximum of
/// the second moment, and its stream.
#[pyfunction]
#[pyo3(signature = (entries, block, seed, param_rounding, offsets=None))]
fn adamw_amsgrad_step_group(
    py: Python<'_>,
    entries: Vec<AmsgradEntry<'_>>,
    block: usize,
    seed: u64,
    param_rounding: &str,
    offsets: Option<Vec<usize>>,
) -> PyResult<()> {
    let offsets = entry_offsets(offsets, entries.len())?;
    let mut arrays = Vec::with_capacity(entries.len());
    for (p, g, m, v, scalars, streams, pstream, kind, vmax, vmax_stream) in &entries {
        let states = [
            state_arrays(m, ADAMW_STATES[0])?,
            state_arrays(v, ADAMW_STATES[1])?,
            state_arrays(vmax, ADAMW_STATES[2])?,
        ];
        let streams = [streams.0, streams.1, *vmax_stream];
        arrays.push((
            param_arrays(p, g, kind)?,
            states,
            adamw_scalars(*scalars),
            streams,
            *pstream,
        ));
    }
    run_group(py, &mut arrays, ADAMW_STATES, &offsets, param_rounding, |items| {
        optim::adamw_amsgrad_steps(items, block, seed)
    })
}

/// One offset per entry (all 0 when not given).
fn entry_offsets(offsets: Option<Vec<usize>>, n: usize) -> PyResult<Vec<usize>> {
    match offsets {
        None => Ok(vec![0; n]),
        Some(o) if o.len() == n => Ok(o),
        Some(o) => {
            Err(wrong_value("offsets", format!("expected one per entry ({n}), got {}", o.len())))
        }
    }
}

/// Whether a float32 array (or uint16 bits of `kind` "bfloat16"/"float16") is all finite.
#[pyfunction]
fn all_finite(py: Python<'_>, x: &Bound<'_, PyAny>, kind: &str) -> PyResult<bool> {
    match half_kind(kind)? {
        None => {
            let a = ro::<f32>(x, "x")?;
            let xs = slice(&a, "x")?;
            Ok(detach_if(py, xs.len(), || optim::all_finite(optim::Grad::F32(xs))))
        }
        Some(h) => {
            let a = ro::<u16>(x, "x")?;
            let xs = slice(&a, "x")?;
            Ok(detach_if(py, xs.len(), || optim::all_finite(optim::Grad::Half(h, xs))))
        }
    }
}

/// Whether every array of `grads` (float32 arrays, or uint16 bits of "bfloat16"/"float16"
/// as `kinds` says) is all finite: one call for a whole optimizer step.
#[pyfunction]
fn all_finite_many(
    py: Python<'_>,
    grads: Vec<Bound<'_, PyAny>>,
    kinds: Vec<String>,
) -> PyResult<bool> {
    if grads.len() != kinds.len() {
        return Err(wrong_value(
            "kinds",
            format!("expected one per array ({}), got {}", grads.len(), kinds.len()),
        ));
    }
    let mut f32s = Vec::new();
    let mut halves = Vec::new();
    for (x, kind) in grads.iter().zip(&kinds) {
        match half_kind(kind)? {
            None => f32s.push(ro::<f32>(x, "grads")?),
            Some(h) => halves.push((h, ro::<u16>(x, "grads")?)),
        }
    }
    let mut gs = Vec::with_capacity(grads.len());
    for a in &f32s {
        gs.push(optim::Grad::F32(slice(a, "grads")?));
    }
    for (h, a) in &halves {
        gs.push(optim::Grad::Half(*h, slice(a, "grads")?));
    }
    let total = gs.iter().map(|g| g.len()).sum();
    Ok(detach_if(py, total, || optim::all_finite_many(&gs)))
}

// ---------------------------------------------------------------- threads and rng

#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    par::set_num_threads(n).map_err(PyErr::from)
}

#[pyfunction]
fn num_threads() -> usize {
    par::num_threads()
}

/// The child side of `fork` (registered with `os.register_at_fork`): new threads on next use.
#[pyfunction]
fn _forked() {
    par::forked()
}

/// The random words of stochastic mode `rounding` ('stochastic' or 'stochastic16').
#[pyfunction]
fn random_bits(
    py: Python<'_>,
    seed: u64,
    stream: u64,
    offset: u64,
    rounding: &str,
    mut out: PyReadwriteArrayDyn<'_, u32>,
) -> PyResult<()> {
    let mode = Rounding::parse(rounding)?;
    if !mode.is_stochastic() {
        return Err(crate::error::Error::value(
            "rounding",
            format!("expected 'stochastic' or 'stochastic16', got {rounding:?}"),
        )
        .into());
    }
    let os = slice_mut(&mut out, "out")?;
    detach_if(py, os.len(), || crate::rng::fill_words(mode.resolution(), seed, stream, offset, os));
    Ok(())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(format_names, m)?)?;
    m.add_function(wrap_pyfunction!(format_aliases, m)?)?;
    m.add_function(wrap_pyfunction!(encode, m)?)?;
    m.add_function(wrap_pyfunction!(decode, m)?)?;
    m.add_function(wrap_pyfunction!(quantize, m)?)?;
    m.add_function(wrap_pyfunction!(pack_codes, m)?)?;
    m.add_function(wrap_pyfunction!(unpack_codes, m)?)?;
    m.add_function(wrap_pyfunction!(packed_len, m)?)?;
    m.add_function(wrap_pyfunction!(linear_levels, m)?)?;
    m.add_function(wrap_pyfunction!(dynamic_levels, m)?)?;
    m.add_function(wrap_pyfunction!(log_levels, m)?)?;
    m.add_function(wrap_pyfunction!(table_encode, m)?)?;
    m.add_function(wrap_pyfunction!(blockwise_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(blockwise_dequantize, m)?)?;
    m.add_function(wrap_pyfunction!(blockwise_layout, m)?)?;
    m.add_class::<Format>()?;
    m.add_class::<Encoder>()?;
    m.add_class::<Table>()?;
    m.add_class::<BlockSpec>()?;
    m.add_function(wrap_pyfunction!(adamw_step_group, m)?)?;
    m.add_function(wrap_pyfunction!(adamw_amsgrad_step_group, m)?)?;
    m.add_function(wrap_pyfunction!(all_finite_many, m)?)?;
    m.add_function(wrap_pyfunction!(all_finite, m)?)?;
    m.add_function(wrap_pyfunction!(sgd_step_group, m)?)?;
    m.add_function(wrap_pyfunction!(muon_momentum, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_forked, m)?)?;
    m.add_function(wrap_pyfunction!(random_bits, m)?)?;
    // the option names the core accepts, in the order of their codes (the CUDA mirror's too)
    m.add("ROUNDINGS", Rounding::ALL.map(|(n, _)| n).to_vec())?;
    m.add("SCALE_RULES", block::ScaleKind::ALL.map(|(n, _)| n).to_vec())?;
    Ok(())
}
