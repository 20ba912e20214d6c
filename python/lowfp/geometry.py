"""Optimizer-geometry tools for experiments: rotated parameterizations, blockwise learning
rates per transformer block type, and per-group sharpness.

- :func:`random_orthogonal`, :func:`rotate_loss`, :class:`Rotated`: optimize in a rotated basis
  W = Q w with a fixed random orthogonal Q. Gradient descent is rotation-equivariant (the
  trajectory of W is the same), Adam is not: it exploits the coordinate (l_inf) geometry, so a
  rotation hurts it (Xie et al., "Adam exploits l_inf geometry of loss landscape via
  coordinate-wise adaptivity").
- :func:`classify_parameters`, :func:`blockwise_lr_groups`: parameters of transformer-like
  models by block type (embedding, attention QK, attention VO, FFN, norm, other) and param
  groups with a learning rate per type (Wang et al. 2025, "The Sharpness Disparity Principle in
  Transformers for Accelerating Language Model Pre-Training").
- :func:`sharpness`: the top Hessian eigenvalue of the loss restricted to each parameter
  group, by Hessian-vector-product power iteration (double backward).

Design notes
- Q is Haar-distributed: the QR factorization of a Gaussian matrix with the signs of R's
  diagonal moved into Q (so Q does not depend on the QR routine's sign convention), computed
  in float64 from a seeded generator and stored in the parameters' dtype.
- :class:`Rotated` rotates each selected parameter as one flattened vector (a dense
  numel x numel Q, so ``max_size`` bounds it); it calls the wrapped module with
  ``torch.func.functional_call`` and the reconstructed weights, leaving the originals frozen
  until :meth:`Rotated.sync` writes the current W into them. Rejected: per-row rotations
  (cheaper, but another geometry than the paper's full rotation).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - torch is an optional extra
    raise ImportError("lowfp.geometry needs torch: pip install 'lowfp[torch]'") from e

__all__ = [
    "random_orthogonal",
    "rotate_loss",
    "Rotated",
    "BLOCK_TYPES",
    "DEFAULT_MULTIPLIERS",
    "classify_parameters",
    "blockwise_lr_groups",
    "sharpness",
]


# ---------------------------------------------------------------- rotations


def random_orthogonal(
    n: int, *, seed: int = 0, dtype: torch.dtype = torch.float32, device: Any = None
) -> torch.Tensor:
    """A Haar-random n x n orthogonal matrix, the same for the same seed on every machine.

    Raises:
        ValueError: n is not a positive int.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: expected a positive int, got {n!r}")
    g = torch.Generator().manual_seed(int(seed))
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r)).unsqueeze(0)
    return q.to(dtype=dtype, device=device)


def rotate_loss(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
):
    """A loss of a flat vector, seen in a rotated basis.

    Args:
        loss_fn: f(x) of a 1-D tensor of n elements.
        n: the dimension.
        seed: the rotation's seed.

    Returns:
        ``(g, Q)``: ``g(w) = f(Q w)``, and Q; start from ``w0 = Q.T @ x0`` to follow the
        same point.
    """
    q = random_orthogonal(n, seed=seed, dtype=dtype)

    def rotated(w: torch.Tensor) -> torch.Tensor:
        return loss_fn(q.to(w.device, w.dtype) @ w)

    return rotated, q


class Rotated(nn.Module):
    """Wrap a module so that the selected parameters are optimized in a rotated basis.

    Each selected parameter W (flattened, n elements) is replaced, for the optimizer, by
    ``w = Q^T W`` with a fixed random orthogonal n x n Q (one per parameter, seeds
    ``seed, seed + 1, …`` in parameter order); the forward pass calls the wrapped module with
    ``W = Q w``. The original parameters are frozen (``requires_grad=False``) and keep their
    values until :meth:`sync`. Optimize ``rotated.parameters()``: the rotated ones and the
    unselected originals have gradients, the frozen ones none.

    Args:
        module: the model.
        seed: seed of the first rotation.
        filter: ``filter(name, param) -> bool`` choosing parameters (default: every parameter
            that requires grad).
        max_size: the largest parameter (elements) to rotate; Q takes max_size² elements.

    Raises:
        ValueError: a selected parameter is larger than max_size; nothing is selected.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        seed: int = 0,
        filter: Optional[Callable[[str, torch.Tensor], bool]] = None,
        max_size: int = 4096,
    ):
        super().__init__()
        self.module = module
        self.names: List[str] = []
        self.rotated = nn.ParameterList()
        for name, p in module.named_parameters():
            if not p.requires_grad or (filter is not None and not filter(name, p)):
                continue
            if p.numel() > max_size:
                raise ValueError(
                    f"max_size: parameter {name!r} has {p.numel()} elements, more "
                    f"than max_size={max_size} (Q would take numel² elements); "
                    "raise max_size or leave it out with filter"
                )
            self.names.append(name)
        if not self.names:
            raise ValueError("filter: no parameter selected")
        params = dict(module.named_parameters())
        for i, name in enumerate(self.names):
            p = params[name]
            q = random_orthogonal(p.numel(), seed=seed + i, dtype=p.dtype, device=p.device)
            self.register_buffer(f"q{i}", q)
            self.rotated.append(nn.Parameter((q.t() @ p.detach().reshape(-1)).clone()))
            p.requires_grad_(False)

    def weights(self) -> Dict[str, torch.Tensor]:
        """{name: W = Q w} in the original shapes (differentiable in w)."""
        params = dict(self.module.named_parameters())
        return {
            name: (getattr(self, f"q{i}") @ w).view(params[name].shape)
            for i, (name, w) in enumerate(zip(self.names, self.rotated))
        }

    def forward(self, *args, **kwargs):
        return torch.func.functional_call(self.module, self.weights(), args, kwargs, strict=False)

    @torch.no_grad()
    def sync(self) -> nn.Module:
        """Write the current W = Q w into the wrapped module's parameters; returns it."""
        params = dict(self.module.named_parameters())
        for name, w in self.weights().items():
            params[name].copy_(w)
        return self.module


# ---------------------------------------------------------------- blockwise learning rates

#: The block types, in the order of :func:`blockwise_lr_groups`' groups.
BLOCK_TYPES = ("embedding", "qk", "vo", "ffn", "norm", "other")

#: The learning-rate multipliers of the official code of Wang et al. 2025 (README of
#: github.com/Wongboo/BlockwiseLearningRate): Norm 1, VO 4, FFN 6, QK 8, Embedding 10 times the
#: base learning rate (the base being the norm layers'); "other" (output heads, fused QKV
#: projections, unrecognized parameters) is ours: 1.
DEFAULT_MULTIPLIERS = {
    "embedding": 10.0,
    "qk": 8.0,
    "vo": 4.0,
    "ffn": 6.0,
    "norm": 1.0,
    "other": 1.0,
}

# Name patterns (tested in this order against the lower-cased qualified parameter name, by
# dot-separated components): the usual spellings of nanoGPT/GPT-2, LLaMA (Meta's and Hugging
# Face's) and torch.nn.TransformerEncoderLayer.
_FFN = re.compile(
    r"(^|\.)(mlp|ffn|feed_?forward|fc[12]?|c_fc|gate_proj|up_proj|down_proj|"
    r"intermediate|linear[12]|w[123])(\.|$)"
)
_QK = re.compile(r"(^|\.)(q_proj|k_proj|q_attn|k_attn|query|key|wq|wk|to_q|to_k|q|k)(\.|$)")
_VO = re.compile(r"(^|\.)(v_proj|o_proj|v_attn|value|out_proj|wv|wo|to_v|to_out|v|o)(\.|$)")
_ATTN_OUT = re.compile(r"(attn|attention).*(^|\.)(c_proj|proj|output)(\.|$)")
_EMB = re.compile(r"(^|\.)(wte|wpe|embed\w*|tok_embeddings|\w*_embeddings?|shared)(\.|$)")
_NORM = re.compile(r"(^|\.)(ln_?\w*|\w*norm\w*)(\.|$)")
_NORM_TYPES: Tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)
if hasattr(nn, "RMSNorm"):
    _NORM_TYPES = _NORM_TYPES + (nn.RMSNorm,)


def _kind(module: nn.Module, name: str) -> str:
    n = name.lower()
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) or (
        not isinstance(module, nn.Linear) and _EMB.search(n)
    ):
        return "embedding"
    if (
        isinstance(module, _NORM_TYPES)
        or type(module).__name__.lower().endswith("norm")
        or _NORM.search(n.rpartition(".")[0] + ".")
    ):
        return "norm"
    if _FFN.search(n):
        return "ffn"
    if _QK.search(n):
        return "qk"
    if _VO.search(n) or _ATTN_OUT.search(n):
        return "vo"
    return "other"


def classify_parameters(model: nn.Module) -> Dict[str, str]:
    """The block type of every parameter of a transformer-like model.

    Rules, first match wins (module types first, then the lower-cased qualified name, matched
    on whole dot-separated components):

    1. ``embedding``: parameters of ``nn.Embedding``/``EmbeddingBag``; outside a Linear, names
       such as ``wte``, ``wpe``, ``embed*``, ``tok_embeddings``, ``*_embedding(s)``.
    2. ``norm``: parameters of ``nn.LayerNorm``/``RMSNorm``/``GroupNorm``/``BatchNorm*`` or of
       a module class named ``*Norm``; modules named ``ln*`` or ``*norm*``.
    3. ``ffn``: under ``mlp``, ``ffn``, ``feed_forward``, ``fc``/``fc1``/``fc2``, ``c_fc``,
       ``gate_proj``/``up_proj``/``down_proj``, ``intermediate``, ``linear1``/``linear2``,
       ``w1``/``w2``/``w3``.
    4. ``qk``: ``q_proj``, ``k_proj``, ``q_attn``, ``k_attn``, ``query``, ``key``, ``wq``,
       ``wk``, ``to_q``, ``to_k``, ``q``, ``k``.
    5. ``vo``: ``v_proj``, ``o_proj``, ``v_attn``, ``value``, ``out_proj``, ``wv``, ``wo``,
       ``to_v``, ``to_out``, ``v``, ``o``; an output projection ``c_proj``/``proj``/
       ``output`` under ``attn``/``attention``.
    6. ``other``: the rest, including output heads (``lm_head``) and *fused* QKV projections
       (``c_attn``, ``qkv``, ``nn.MultiheadAttention.in_proj_weight``), whose rows mix QK and
       V: split them into separate projections to give them block learning rates.

    A parameter shared by several modules (tied embeddings) is classified once, by its first
    name.

    Returns:
        {qualified parameter name: block type}, in ``model.named_parameters()`` order.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    owner = {}
    for mname, m in model.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            owner[f"{mname}.{pname}" if mname else pname] = m
    return {name: _kind(owner[name], name) for name, _ in model.named_parameters()}


def blockwise_lr_groups(
    model: nn.Module, multipliers: Optional[Dict[str, float]] = None, *, lr: float
) -> List[Dict[str, Any]]:
    """Param groups with a learning rate per block type (blockwise LR).

    Args:
        model: the model (parameters classified by :func:`classify_parameters`; only those
            that require grad are included).
        multipliers: {block type: multiplier} overriding :data:`DEFAULT_MULTIPLIERS` (Norm 1,
            VO 4, FFN 6, QK 8, Embedding 10, other 1); keys among :data:`BLOCK_TYPES`.
        lr: the base learning rate; a group's ``lr`` is ``lr * multiplier``.

    Returns:
        One dict per non-empty block type, in :data:`BLOCK_TYPES` order:
        ``{"params": [...], "lr": lr * m, "name": type, "lr_multiplier": m}`` (torch
        optimizers keep the extra keys; an LR scheduler scales each group's ``lr``).

    Raises:
        ValueError: an unknown block type or a negative multiplier.
    """
    mult = dict(DEFAULT_MULTIPLIERS)
    for k, v in (multipliers or {}).items():
        if k not in BLOCK_TYPES:
            raise ValueError(f"multipliers: unknown block type {k!r}; expected among {BLOCK_TYPES}")
        if not (isinstance(v, (int, float)) and v >= 0 and math.isfinite(v)):
            raise ValueError(f"multipliers[{k!r}]: expected a finite number >= 0, got {v!r}")
        mult[k] = float(v)
    kinds = classify_parameters(model)
    params = dict(model.named_parameters())
    out = []
    for kind in BLOCK_TYPES:
        ps = [params[n] for n, k in kinds.items() if k == kind and params[n].requires_grad]
        if ps:
            out.append(
                {"params": ps, "lr": lr * mult[kind], "name": kind, "lr_multiplier": mult[kind]}
            )
    return out


# ---------------------------------------------------------------- sharpness

Groups = Union[None, Dict[str, Iterable[torch.Tensor]], List[Dict[str, Any]]]


def _named_groups(model: nn.Module, groups: Groups) -> Dict[str, List[torch.Tensor]]:
    if groups is None:
        return {"all": [p for p in model.parameters() if p.requires_grad]}
    if isinstance(groups, dict):
        return {str(k): list(v) for k, v in groups.items()}
    if isinstance(groups, (list, tuple)):
        out = {}
        for i, g in enumerate(groups):
            if not isinstance(g, dict) or "params" not in g:
                raise TypeError("groups: a list must hold param-group dicts with 'params'")
            out[str(g.get("name", i))] = list(g["params"])
        return out
    raise TypeError(
        f"groups: expected None, a dict of name -> parameters or a list of param "
        f"groups, got {type(groups).__name__}"
    )


def _math_attention():
    """Scaled-dot-product attention on its math backend: the fused CPU/GPU kernels have no
    double backward."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - torch < 2.3
        import contextlib

        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def sharpness(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    batch: Any,
    groups: Groups = None,
    *,
    iters: int = 20,
    seed: int = 0,
    tol: float = 1e-4,
) -> Dict[str, float]:
    """The top eigenvalue of the Hessian block of each parameter group (power iteration).

    For each group g, power iteration on v -> H_gg v, the Hessian-vector product of the loss
    with respect to the group's parameters (the others held fixed), computed by double
    backward from one forward pass. Returns the Rayleigh quotient <v, H v> of the last
    iterate: the eigenvalue of largest magnitude (sign kept; negative when the block's most
    curved direction is concave), to relative ``tol`` or after ``iters`` iterations.

    Args:
        model: the model (run in eval mode for the measurement, its mode restored;
            scaled-dot-product attention on its math backend, which has a double backward).
        loss_fn: ``loss_fn(model, batch) -> scalar loss``.
        batch: passed to loss_fn.
        groups: None (all parameters, one group "all"), ``{name: parameters}``, or a list of
            param groups (e.g. :func:`blockwise_lr_groups`, named by their ``"name"``).
        iters: the most power iterations per group (an int >= 1).
        seed: seed of the starting vectors (one generator, groups in order).
        tol: stop when the Rayleigh quotient changes by less than tol * |value|.

    Returns:
        {group name: eigenvalue}; an empty group is skipped; parameters the loss does not
        depend on, or only linearly, contribute a zero block (a group of only those: 0.0).

    Raises:
        TypeError: groups of another type; a loss that is not a scalar tensor.
        ValueError: iters < 1.
    """
    if not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters: expected an int >= 1, got {iters!r}")
    named = {k: v for k, v in _named_groups(model, groups).items() if v}
    training = model.training
    model.eval()
    try:
        with torch.enable_grad(), _math_attention():
            loss = loss_fn(model, batch)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise TypeError("loss_fn: expected a scalar tensor loss")
            everything = list({id(p): p for ps in named.values() for p in ps}.values())
            grads = torch.autograd.grad(loss, everything, create_graph=True, allow_unused=True)
            grad_of = {id(p): g for p, g in zip(everything, grads)}
            gen = torch.Generator().manual_seed(int(seed))
            out = {}
            for name, ps in named.items():
                v = [torch.randn(p.shape, generator=gen, dtype=torch.float64).to(p) for p in ps]
                # parameters the loss is at most linear in have a zero Hessian block: left out
                live = [
                    i
                    for i, p in enumerate(ps)
                    if grad_of[id(p)] is not None and grad_of[id(p)].requires_grad
                ]
                if not live:
                    out[name] = 0.0
                    continue
                ps, v = [ps[i] for i in live], [v[i] for i in live]
                gs = [grad_of[id(p)] for p in ps]
                norm = math.sqrt(sum(float(x.double().square().sum()) for x in v))
                v = [x / norm for x in v]
                value = math.nan
                hv: Sequence[torch.Tensor]
                for _ in range(iters):
                    hv = torch.autograd.grad(
                        gs, ps, grad_outputs=v, retain_graph=True, allow_unused=True
                    )
                    hv = [torch.zeros_like(p) if h is None else h for p, h in zip(ps, hv)]
                    new = sum(float((a.double() * b.double()).sum()) for a, b in zip(v, hv))
                    norm = math.sqrt(sum(float(h.double().square().sum()) for h in hv))
                    done = not math.isnan(value) and abs(new - value) <= tol * abs(new)
                    value = new
                    if norm == 0.0 or done:
                        break
                    v = [h.detach() / norm for h in hv]
                out[name] = value
    finally:
        model.train(training)
    return out
