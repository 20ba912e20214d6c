"""Checkpoints: quantize a state dict into a file, and load it back as a model takes it.

``save_state_dict(sd, path, format=...)`` quantizes the tensors a filter picks (by default
those with two or more dimensions and at least 4096 elements: weight matrices, not biases or
norm weights) and keeps the rest as they are; ``load_state_dict(path, dtype=...)`` returns the
same names, shapes and structure, the quantized tensors decoded into ``dtype`` ("original":
the dtype each had when saved), so ``model.load_state_dict(lowfp.load_state_dict(p),
strict=True)`` works. ``lowfp convert`` is this module on the command line.

Design:
- The writer is chosen by the file's extension: ``.safetensors`` (no pickles; QTensors as
  :func:`lowfp.save_qtensors` stores them, plain tensors under their own names, the nesting
  and non-tensor values as JSON in the header entry ``lowfp.checkpoint``) or ``.pt`` /
  ``.pth`` (``torch.save`` of the same structure, each QTensor a dict of plain tensors and
  its metadata, readable with ``torch.load(weights_only=True)``). Any other extension is an
  error: a ``.pt`` name holding safetensors bytes fails later with a misleading message.
- Nested checkpoints (``{"model": sd, "optimizer": ..., "step": 10}``) are walked: dicts and
  lists are kept as they are, tensors found at any depth. In a safetensors file a nested
  tensor is stored under its path joined with "/" (a top-level one under its own name).
- Non-float tensors (int, bool) and non-tensor values pass through unchanged; a float tensor
  holding NaN or ±inf is kept as it is, with a note (a mask of -inf is not data to quantize).
- Rejected: always quantizing everything (what torchao and bitsandbytes skip by default --
  1-D norm weights and small biases -- costs accuracy for no memory); dropping what cannot be
  quantized (silent data loss).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .qtensor import (
    PRESETS,
    QTensor,
    load_qtensors,
    qtensor_from_metadata,
    quantize_blockwise,
    read_arrays,
    save_qtensors,
)

#: What ``load_state_dict(dtype=...)`` and ``lowfp convert --to`` accept.
DTYPES = ("float32", "bfloat16", "float16", "original")
#: The default filter's smallest quantized tensor (elements); torchao's default filter
#: skips layers this small too.
MIN_SIZE = 4096
#: The writers, by file extension.
EXTENSIONS = (".safetensors", ".pt", ".pth")

_FLOAT = ("float64", "float32", "float16", "bfloat16")
_META = "lowfp.checkpoint"
_PT_TAG = "lowfp.qtensor.v1"

Filter = Callable[[str, Any], bool]


def make_filter(
    include: Optional[str] = None, exclude: Optional[str] = None, min_size: int = MIN_SIZE
) -> Filter:
    """The filter ``lowfp convert`` uses: quantize a float tensor when it has two or more
    dimensions and at least ``min_size`` elements, its name matches ``include`` (if given,
    ``re.search``) and does not match ``exclude`` (if given).

    Raises:
        ValueError: a pattern is not a valid regular expression, or min_size is negative.
    """
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
        raise ValueError(f"min_size: expected a non-negative int, got {min_size!r}")
    pats = []
    for arg, pat in (("include", include), ("exclude", exclude)):
        try:
            pats.append(re.compile(pat) if pat is not None else None)
        except re.error as e:
            raise ValueError(f"{arg}: not a regular expression: {pat!r} ({e})") from None
    inc, exc = pats

    def keep(name: str, t: Any) -> bool:
        shape = tuple(t.shape)
        return (
            len(shape) >= 2
            and int(np.prod(shape, dtype=np.int64)) >= min_size
            and (inc is None or inc.search(name) is not None)
            and (exc is None or exc.search(name) is None)
        )

    return keep


#: The default filter: two or more dimensions and at least 4096 elements.
default_filter = make_filter()


@dataclass
class Report:
    """What :func:`save_state_dict` did, tensor by tensor.

    Attributes:
        quantized: names of the tensors stored quantized.
        kept: names of the float tensors left in their dtype (filtered out or non-finite).
        passed: names of the non-float tensors and other values passed through.
        notes: one line per tensor that needs a word (non-finite values kept, ...).
        bytes_before, bytes_after: bytes of every tensor, before and after.
    """

    quantized: List[str] = field(default_factory=list)
    kept: List[str] = field(default_factory=list)
    passed: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    bytes_before: int = 0
    bytes_after: int = 0


# ---------------------------------------------------------------- tensors of either kind


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "is_floating_point")


def _is_tensor(x: Any) -> bool:
    return isinstance(x, np.ndarray) or _is_torch(x)


def _dtype_name(t: Any) -> str:
    return str(t.dtype).replace("torch.", "")


def _nbytes(t: Any) -> int:
    return int(t.nbytes) if isinstance(t, np.ndarray) else int(t.numel() * t.element_size())


def _all_finite(t: Any) -> bool:
    if _is_torch(t):
        import torch

        return bool(torch.isfinite(t).all())
    return bool(np.isfinite(t.astype(np.float32) if t.dtype.name == "bfloat16" else t).all())


def _to_numpy(t: Any) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    t = t.detach().cpu().contiguous()
    if _dtype_name(t) == "bfloat16":
        import ml_dtypes
        import torch

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _to_torch(a: Any) -> Any:
    import torch

    if _is_torch(a):
        return a
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


# ---------------------------------------------------------------- nesting


def _map(tree: Any, fn: Callable[[Tuple[str, ...], Any], Any], path: Tuple[str, ...] = ()):
    """The same structure with every tensor (and QTensor) replaced by fn(path, tensor)."""
    if _is_tensor(tree) or isinstance(tree, QTensor):
        return fn(path, tree)
    if isinstance(tree, dict):
        return {k: _map(v, fn, path + (str(k),)) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_map(v, fn, path + (str(i),)) for i, v in enumerate(tree))
    return tree


def _name(path: Tuple[str, ...]) -> str:
    return "/".join(path) if path else "tensor"


# ---------------------------------------------------------------- save


def quantize_state_dict(
    sd: Any,
    format: str = "mxfp8",
    filter: Optional[Filter] = None,
    *,
    block_size: Optional[int] = None,
    scale: Optional[str] = None,
    rounding: str = "nearest",
    seed: Optional[int] = 0,
) -> Tuple[Any, Report]:
    """The structure of ``sd`` with the tensors ``filter`` picks replaced by QTensors.

    Args and Raises: as :func:`save_state_dict` (without the file).

    Returns:
        (tree, report): the new structure (QTensors carry ``orig_dtype``) and a :class:`Report`.
    """
    filt = default_filter if filter is None else filter
    _check_preset(format, block_size, scale)
    kw: Dict[str, Any] = {} if block_size is None else {"block_size": block_size}
    if scale is not None:
        kw["scale"] = scale
    # the options are checked once, up front, even when no tensor is picked
    try:
        quantize_blockwise(np.zeros(1, np.float32), format, rounding=rounding, seed=seed, **kw)
    except ValueError as e:
        if str(e).split(":")[0] in ("block_size", "scale", "rounding", "seed"):
            raise
        raise ValueError(f"format: {format!r}: {e}") from None
    rep = Report()

    def one(path: Tuple[str, ...], t: Any) -> Any:
        name = _name(path)
        if isinstance(t, QTensor):
            raise ValueError(f"sd[{name!r}]: already a QTensor; pass the float tensor")
        rep.bytes_before += _nbytes(t)
        if _dtype_name(t) not in _FLOAT:
            rep.passed.append(name)
            rep.bytes_after += _nbytes(t)
            return t
        if not filt(name, t):
            rep.kept.append(name)
            rep.bytes_after += _nbytes(t)
            return t
        if not _all_finite(t):
            rep.kept.append(name)
            rep.notes.append(f"{name}: holds NaN or ±inf; kept in {_dtype_name(t)}, not quantized")
            rep.bytes_after += _nbytes(t)
            return t
        src = t.detach().cpu() if _is_torch(t) else t
        try:
            q = quantize_blockwise(src, format, rounding=rounding, seed=seed, **kw)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"tensor {name!r} (shape {tuple(t.shape)}, {_dtype_name(t)}): {e}"
            ) from None
        q.orig_dtype = _dtype_name(t)  # what dtype="original" decodes it back into
        rep.quantized.append(name)
        rep.bytes_after += q.nbytes
        return q

    tree = _map(sd, one)
    for path, v in _iter_values(tree):
        if not _is_tensor(v) and not isinstance(v, QTensor):
            rep.passed.append(_name(path))
    return tree, rep


def _iter_values(tree: Any, path: Tuple[str, ...] = ()):
    """(path, leaf) for every non-container leaf."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _iter_values(v, path + (str(k),))
    elif isinstance(tree, (list, tuple)) and not _is_tensor(tree):
        for i, v in enumerate(tree):
            yield from _iter_values(v, path + (str(i),))
    else:
        yield path, tree


def _check_preset(fmt: Any, block_size: Optional[int], scale: Optional[str]) -> None:
    """A preset fixes its block size and scale rule: anything else is not that format."""
    if not isinstance(fmt, str) or fmt.lower() not in PRESETS:
        return
    elem, b, s = PRESETS[fmt.lower()]
    if block_size is not None and block_size != b:
        raise ValueError(
            f"block_size: {fmt} fixes the block size at {b}, got {block_size}; "
            f"for another block size name the parts: format {elem}, scale {s}"
        )
    if scale is not None and scale != s:
        raise ValueError(
            f"scale: {fmt} fixes the scale rule at {s}, got {scale}; for another "
            f"rule name the parts: format {elem}, block size {b}"
        )


def _writer(path: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext not in EXTENSIONS:
        raise ValueError(
            f"path: the extension decides the writer: expected "
            f"{', '.join(EXTENSIONS)}, got {path!r}"
        )
    return "safetensors" if ext == ".safetensors" else "torch"


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Write through a temporary file in the same directory, then rename it onto ``path``:
    a failure leaves no partial output and an existing file as it was.

    Raises:
        ValueError: path is a directory or its directory does not exist.
    """
    if os.path.isdir(path):
        raise ValueError(f"path: {path} is a directory; expected a file name")
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ValueError(f"path: no such directory: {d}")
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".lowfp-", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # as open() would create it, not mkstemp's 0600
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_tree(tree: Any, path: str) -> None:
    """Write a structure from :func:`quantize_state_dict` (atomically; the writer by
    extension, see the module notes).

    Raises:
        ValueError: unknown extension, or (safetensors) a value that JSON cannot hold.
    """
    if _writer(path) == "torch":
        import torch

        def pt_leaf(_path: Tuple[str, ...], t: Any) -> Any:
            if isinstance(t, QTensor):
                return {
                    _PT_TAG: json.dumps(t.metadata()),
                    "dtype": getattr(t, "orig_dtype", "float32"),
                    "codes": torch.from_numpy(t.codes),
                    "scales": torch.from_numpy(t.scales),
                    "alphas": None if t.alphas is None else torch.from_numpy(t.alphas),
                }
            return _to_torch(t)

        obj = _map(tree, pt_leaf)
        atomic_write(path, lambda tmp: torch.save(obj, tmp))
        return
    flat: Dict[str, Any] = {}
    dtypes: Dict[str, str] = {}

    def st_leaf(path_: Tuple[str, ...], t: Any) -> Any:
        name = _name(path_)
        if name in flat:
            raise ValueError(f"sd: two entries are both stored as {name!r}")
        flat[name] = t if isinstance(t, QTensor) else _to_numpy(t)
        if isinstance(t, QTensor):
            dtypes[name] = getattr(t, "orig_dtype", "float32")
        return {"$tensor": name}

    skeleton = _map(tree, st_leaf)
    _check_json(skeleton)
    meta = json.dumps({"tree": skeleton, "dtypes": dtypes})
    atomic_write(path, lambda tmp: save_qtensors(flat, tmp, metadata={_META: meta}))


def _check_json(tree: Any, path: Tuple[str, ...] = ()) -> None:
    """Raise ValueError naming the first entry JSON would not give back as it was."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if not isinstance(k, str):
                raise ValueError(
                    f"sd[{_name(path)!r}]: key {k!r} is not a string, which a "
                    f"safetensors file cannot keep; write a .pt file"
                )
            _check_json(v, path + (k,))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            _check_json(v, path + (str(i),))
    elif not isinstance(tree, (str, int, float, bool, type(None))):
        raise ValueError(
            f"sd[{_name(path)!r}]: a {type(tree).__name__} cannot be stored in "
            f"safetensors (tensors and JSON values only); write a .pt file"
        )


def save_state_dict(
    sd: Any,
    path: str,
    format: str = "mxfp8",
    filter: Optional[Filter] = None,
    *,
    block_size: Optional[int] = None,
    scale: Optional[str] = None,
    rounding: str = "nearest",
    seed: Optional[int] = 0,
) -> Report:
    """Quantize a (possibly nested) state dict into a file.

    Args:
        sd: name → torch tensor or NumPy array; dicts and lists may nest, and hold other
            values (``{"model": sd, "step": 10}``).
        path: ``.safetensors`` (no pickles) or ``.pt`` / ``.pth`` (``torch.save``); written
            atomically.
        format: a format of ≤ 8 bits or a preset ("mxfp8", "mxfp4", "nvfp4", ...).
        filter: ``(name, tensor) -> bool``: which float tensors to quantize (nested names are
            joined with "/"). Default :data:`default_filter`: two or more dimensions and at
            least 4096 elements; the rest stay in their dtype. Non-finite tensors are kept.
        block_size, scale, rounding, seed: as :func:`lowfp.quantize_blockwise`; a preset's
            block size and scale rule cannot be changed.

    Returns:
        A :class:`Report` of what was quantized, kept and passed through.

    Raises:
        ValueError: unknown extension, a preset's block size or scale changed, or a tensor
            that cannot be quantized (the message names it).
    """
    _writer(path)
    tree, rep = quantize_state_dict(
        sd, format, filter, block_size=block_size, scale=scale, rounding=rounding, seed=seed
    )
    write_tree(tree, path)
    return rep


# ---------------------------------------------------------------- load


def _cast(t: Any, dtype: Optional[str], framework: str) -> Any:
    """A plain tensor in dtype (None: as it is), in the framework's type."""
    if framework == "torch":
        t = _to_torch(t)
        if dtype is not None and t.is_floating_point():
            import torch

            t = t.to(getattr(torch, dtype))
        return t
    t = _to_numpy(t)
    if dtype is not None and t.dtype.name in _FLOAT and t.dtype.name != dtype:
        import ml_dtypes

        t = t.astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    return t


def _decode(q: QTensor, dtype: str, framework: str) -> Any:
    v = q.dequantize(np.float32)
    if framework == "torch":
        import torch

        return torch.from_numpy(v).to(getattr(torch, dtype))
    return v if dtype == "float32" else q.dequantize(dtype)


def torch_load(path: str, arg: str = "path") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with lowfp's own messages.

    Raises:
        ValueError: torch is not installed, the file is corrupt or not a torch file, or it
            holds pickled Python objects (a whole ``nn.Module``) that a weights-only load
            refuses -- lowfp never unpickles code.
    """
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"{arg}: reading {path} needs torch: pip install torch (CPU only: "
            f"pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ... by torch version
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        if found:
            raise ValueError(
                f"{arg}: {path} holds pickled Python objects ({found.group(1)}), "
                f"e.g. a whole model saved with torch.save(model); lowfp reads "
                f"tensors only: save model.state_dict() instead"
            ) from None
        raise ValueError(
            f"{arg}: cannot read {path} as a torch checkpoint: the file is "
            f"corrupt, truncated or not written by torch.save"
        ) from None


def load_quantized(path: str) -> Any:
    """The structure stored in a file, QTensors left quantized (each with ``orig_dtype``).

    A file not written by lowfp (a plain safetensors or torch state dict) gives its tensors
    as they are.

    Raises:
        ValueError: unknown extension, unreadable file.
    """
    if _writer(path) == "torch":

        def from_pt(tree: Any) -> Any:
            if isinstance(tree, dict) and _PT_TAG in tree:
                alphas = tree["alphas"]
                q = qtensor_from_metadata(
                    json.loads(tree[_PT_TAG]),
                    tree["codes"].numpy(),
                    tree["scales"].numpy(),
                    None if alphas is None else alphas.numpy(),
                    f"{path}: a quantized tensor",
                )
                q.orig_dtype = tree.get("dtype", "float32")  # type: ignore[attr-defined]
                return q
            if isinstance(tree, dict):
                return {k: from_pt(v) for k, v in tree.items()}
            if isinstance(tree, (list, tuple)):
                return type(tree)(from_pt(v) for v in tree)
            return tree

        return from_pt(torch_load(path))
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"path: cannot read {path} as safetensors: {e}") from None
    if "lowfp" not in md:
        return read_arrays(path)
    entries = load_qtensors(path)
    ck = json.loads(md[_META]) if _META in md else {"tree": None, "dtypes": {}}
    for k, v in entries.items():
        if isinstance(v, QTensor):
            v.orig_dtype = ck["dtypes"].get(k, "float32")  # type: ignore[attr-defined]
    if ck["tree"] is None:
        return entries

    def build(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"$tensor"}:
                return entries[node["$tensor"]]
            return {k: build(v) for k, v in node.items()}
        if isinstance(node, list):
            return [build(v) for v in node]
        return node

    return build(ck["tree"])


def load_state_dict(path: str, dtype: str = "original", framework: str = "torch") -> Any:
    """Load a file written by :func:`save_state_dict` (or :func:`lowfp.save_qtensors`).

    Args:
        path: a ``.safetensors`` or ``.pt`` / ``.pth`` file.
        dtype: "float32", "bfloat16", "float16": every float tensor in that dtype (quantized
            ones decoded into it, plain ones cast); "original" (default): each quantized
            tensor in the dtype it had when saved (float32 if not recorded), plain ones as
            stored.
        framework: "torch" (default: torch tensors, ready for ``model.load_state_dict``) or
            "numpy".

    Returns:
        The saved structure (a dict of name → tensor for a flat state dict).

    Raises:
        ValueError: dtype or framework not one of those, unknown extension, unreadable file.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if framework not in ("torch", "numpy"):
        raise ValueError(f"framework: expected 'torch' or 'numpy', got {framework!r}")
    want = None if dtype == "original" else dtype

    def leaf(_path: Tuple[str, ...], t: Any) -> Any:
        if isinstance(t, QTensor):
            return _decode(t, want or str(getattr(t, "orig_dtype", "float32")), framework)
        return _cast(t, want, framework)

    return _map(load_quantized(path), leaf)
