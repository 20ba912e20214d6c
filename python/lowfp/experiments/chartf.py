"""A tiny character-level transformer on the Python standard library's own source text.

Data that needs no download: the bytes of a fixed, sorted list of pure-Python standard-library
modules (:data:`MODULES`, those present under ``sysconfig.get_paths()["stdlib"]``), concatenated
and cut to at most ``max_bytes``; the last 10% is the validation text. The vocabulary is the 256
byte values. Every machine with Python has this text; it differs a little between Python
versions (the report names the version and the byte count), so losses are comparable within one
Python version.

The model: byte embedding + learned positions (d = 64), ``layers`` pre-LayerNorm blocks of causal
self-attention (4 heads; separate q, k, v, o projections) and a 4× GELU MLP, a final LayerNorm
and an untied output layer. Linear
layers have no biases, so the matrices (Muon's) and the rest (embeddings, head, gains: AdamW's)
split cleanly by name (:func:`param_groups`). Training batches and the initial weights come from
``torch.Generator``s keyed by the seed: a run is deterministic given the seed (on one machine
and thread count; float reductions may differ across thread counts).

Rejected alternatives: a word-level vocabulary (needs a tokenizer and more parameters) and
torch's ``nn.TransformerEncoderLayer`` (fused kernels whose numerics vary with torch versions).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sysconfig
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "MODULES",
    "Config",
    "CharTransformer",
    "load_text",
    "batches",
    "param_groups",
    "evaluate",
    "train",
    "torch_threads",
]

#: Pure-Python standard-library modules present in every CPython ≥ 3.9 (sorted, fixed).
MODULES = (
    "abc.py",
    "argparse.py",
    "ast.py",
    "base64.py",
    "bisect.py",
    "calendar.py",
    "cmd.py",
    "code.py",
    "codecs.py",
    "colorsys.py",
    "contextlib.py",
    "copy.py",
    "csv.py",
    "dataclasses.py",
    "datetime.py",
    "difflib.py",
    "dis.py",
    "enum.py",
    "filecmp.py",
    "fnmatch.py",
    "fractions.py",
    "functools.py",
    "getopt.py",
    "gettext.py",
    "glob.py",
    "gzip.py",
    "heapq.py",
    "hmac.py",
    "inspect.py",
    "ipaddress.py",
    "keyword.py",
    "linecache.py",
    "locale.py",
    "numbers.py",
    "operator.py",
    "optparse.py",
    "pathlib.py",
    "pickle.py",
    "pprint.py",
    "queue.py",
    "random.py",
    "reprlib.py",
    "secrets.py",
    "shlex.py",
    "shutil.py",
    "statistics.py",
    "string.py",
    "tempfile.py",
    "textwrap.py",
    "threading.py",
    "timeit.py",
    "tokenize.py",
    "traceback.py",
    "types.py",
    "typing.py",
    "uuid.py",
    "warnings.py",
    "weakref.py",
    "zipfile.py",
)


#: Linear learning-rate warm-up steps of :func:`train`. Measured on the low-bit-states model
#: (d = 64, 200 steps, float32 torch AdamW, validation loss over seeds 0..3): lr 3e-3 alone
#: 2.315 / 2.412 / 2.612 / 2.400; with 50 warm-up steps 2.394 / 2.472 / 2.410 / 2.388; with
#: warm-up and clipping at 1.0 2.351 / 2.342 / 2.334 / 2.350 (lr 2e-3: 2.356 / 2.358 / 2.363 /
#: 2.351; lr 1e-3 without either: 2.422 .. 2.446). Warm-up + clipping at lr 3e-3 is the
#: stable baseline every char-transformer experiment uses (docs/experiments.md). Measured again
#: after q, k, v became separate projections (the same initial values, drawn in the same
#: order): 2.322 / 2.412 / 2.612 / 2.395 without, 2.351 / 2.342 / 2.334 / 2.350 with.
WARMUP = 50
#: Gradient-norm clipping of :func:`train` (None: off).
CLIP: Optional[float] = 1.0


@dataclasses.dataclass(frozen=True)
class Config:
    """Model and data sizes (the defaults train in seconds on 2 CPU threads)."""

    d_model: int = 64
    layers: int = 2
    heads: int = 4
    context: int = 64
    batch: int = 32
    max_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        for k in ("d_model", "layers", "heads", "context", "batch", "max_bytes"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{k}: expected a positive integer, got {v!r}")
        if self.d_model % self.heads:
            raise ValueError(
                f"heads: expected a divisor of d_model={self.d_model}, got {self.heads}"
            )


def load_text(max_bytes: int = Config.max_bytes, stdlib: Optional[str] = None) -> bytes:
    """The concatenated source of :data:`MODULES` found in ``stdlib`` (default: this Python's),
    at most ``max_bytes`` bytes.

    Raises:
        ValueError: fewer than 64 KiB of text found (``stdlib`` is not a standard library).
    """
    root = stdlib or sysconfig.get_paths()["stdlib"]
    parts: List[bytes] = []
    size = 0
    for name in MODULES:
        path = os.path.join(root, name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as fh:
            parts.append(fh.read())
        size += len(parts[-1])
        if size >= max_bytes:
            break
    text = b"".join(parts)[:max_bytes]
    if len(text) < 1 << 16:
        raise ValueError(
            f"stdlib: expected the Python standard library's sources under {root}, "
            f"found {len(text)} bytes of them"
        )
    return text


def split(text: bytes) -> Tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) byte tensors: the first 90% and the last 10%."""
    data = torch.frombuffer(bytearray(text), dtype=torch.uint8).long()
    cut = int(len(data) * 0.9)
    return data[:cut], data[cut:]


def batches(data: torch.Tensor, cfg: Config, seed: int):
    """An endless stream of (inputs, targets) of shape (batch, context), from random offsets
    drawn by a generator keyed by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    n = len(data) - cfg.context - 1
    ar = torch.arange(cfg.context)
    while True:
        start = torch.randint(0, n, (cfg.batch, 1), generator=gen)
        idx = start + ar
        yield data[idx], data[idx + 1]


class Block(nn.Module):
    """Pre-LayerNorm block: causal self-attention with separate q, k, v, o projections (so that
    :func:`lowfp.geometry.classify_parameters` sees QK, VO, FFN and norm blocks by name) and a
    4× GELU MLP (fc1, fc2)."""

    def __init__(self, cfg: Config):
        super().__init__()
        d = cfg.d_model
        self.heads = cfg.heads
        self.ln1 = nn.LayerNorm(d, bias=False)
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.o = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d, bias=False)
        self.fc1 = nn.Linear(d, 4 * d, bias=False)
        self.fc2 = nn.Linear(4 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln1(x)
        shape = (b, t, self.heads, d // self.heads)
        q, k, v = (lin(h).view(shape).transpose(1, 2) for lin in (self.q, self.k, self.v))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class CharTransformer(nn.Module):
    """Byte-level causal transformer (see the module docstring)."""

    def __init__(self, cfg: Config, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.tok = nn.Embedding(256, d)
        self.pos = nn.Embedding(cfg.context, d)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(d, bias=False)
        self.head = nn.Linear(d, 256, bias=False)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # GPT-2 style init, from the seeded generator
            for name, p in self.named_parameters():
                if p.ndim < 2:
                    continue
                std = 0.02
                if name.endswith(("o.weight", "fc2.weight")):
                    std /= math.sqrt(2 * cfg.layers)
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos.weight[:t]
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy in nats per byte."""
        logits = self(idx)
        return F.cross_entropy(logits.view(-1, 256), targets.reshape(-1))


def param_groups(model: CharTransformer) -> Tuple[List[nn.Parameter], List[nn.Parameter]]:
    """(hidden matrices, the rest): the block matrices are Muon's; embeddings, the output
    layer and the LayerNorm gains go to AdamW (as in Muon's reference setups)."""
    mats, rest = [], []
    for name, p in model.named_parameters():
        (mats if name.startswith("blocks.") and p.ndim >= 2 else rest).append(p)
    return mats, rest


@torch.no_grad()
def evaluate(
    model: CharTransformer, val: torch.Tensor, cfg: Config, n_batches: int = 8, seed: int = 12345
) -> float:
    """Mean validation loss (nats per byte) over ``n_batches`` fixed batches."""
    model.eval()
    it = batches(val, cfg, seed)
    total = sum(float(model.loss(*next(it))) for _ in range(n_batches)) / n_batches
    model.train()
    return total


def train(
    model: CharTransformer,
    opt,
    data: Tuple[torch.Tensor, torch.Tensor],
    cfg: Config,
    steps: int,
    seed: int,
    eval_at: Tuple[int, ...] = (),
    record_every: int = 1,
    on_step: Optional[Callable[[], None]] = None,
    warmup: int = WARMUP,
    clip: Optional[float] = CLIP,
) -> Dict[str, list]:
    """Train for ``steps`` steps on batches keyed by ``seed`` (the same batches for every
    optimizer). Returns ``{"step", "loss"}`` (training loss every ``record_every`` steps) and
    ``{"eval_step", "val_loss"}`` at the steps of ``eval_at``. A non-finite training loss stops
    the run early: the remaining records are nan.

    ``warmup``: the learning rate of every param group rises linearly over that many steps
    (``lr·min(1, s/warmup)``), then stays constant: a fixed number of steps, not a fraction of
    the run, so the first T steps of a longer run are the same as a run of T steps.
    ``clip``: gradient-norm clipping (``torch.nn.utils.clip_grad_norm_``) before each step, or
    None. Both exist for stable float32 baselines (see :data:`WARMUP`)."""
    train_data, val = data
    it = batches(train_data, cfg, seed)
    rec: Dict[str, list] = {"step": [], "loss": [], "eval_step": [], "val_loss": []}
    diverged = False
    groups = _lr_groups(opt)
    base = [g["lr"] for g in groups]
    params = [p for p in model.parameters()]
    for s in range(1, steps + 1):
        x, y = next(it)
        if warmup > 0 and s <= warmup + 1:
            f = min(1.0, s / warmup)
            for g, lr in zip(groups, base):
                g["lr"] = lr * f
        if not diverged:
            loss = model.loss(x, y)
            opt.zero_grad()
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
            lv = float(loss.detach())
            diverged = not math.isfinite(lv)
        else:
            lv = float("nan")
        if s % record_every == 0 or s == steps:
            rec["step"].append(s)
            rec["loss"].append(lv)
        if s in eval_at:
            rec["eval_step"].append(s)
            rec["val_loss"].append(float("nan") if diverged else evaluate(model, val, cfg))
        if on_step is not None:
            on_step()
    return rec


def _lr_groups(opt) -> list:
    """The param groups whose ``lr`` a schedule sets (a wrapper's are its inner optimizer's;
    Muon copies its AdamW groups' lr into its internal AdamW each step)."""
    return list(opt.param_groups)


class torch_threads:
    """Context manager: run torch on ``n`` intra-op threads, then restore the old count. A model
    this small runs fastest on one thread (measured: 21 ms per step at d = 64 on 1 thread
    against 96 ms on 2 busy cores); lowfp's Rust codecs keep their own thread pool."""

    def __init__(self, n: int = 1):
        self.n = n

    def __enter__(self) -> "torch_threads":
        self.old = torch.get_num_threads()
        torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.old)
