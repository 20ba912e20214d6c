"""lowfp.geometry: rotations (hurt Adam, not SGD), block types and blockwise LR, sharpness."""

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import lowfp.optim  # noqa: E402
from lowfp import geometry  # noqa: E402

sharpness = geometry.sharpness


def test_random_orthogonal():
    q = geometry.random_orthogonal(16, seed=3, dtype=torch.float64)
    assert torch.allclose(q.t() @ q, torch.eye(16, dtype=torch.float64), atol=1e-12)
    assert torch.equal(q, geometry.random_orthogonal(16, seed=3, dtype=torch.float64))
    assert not torch.equal(q, geometry.random_orthogonal(16, seed=4, dtype=torch.float64))
    with pytest.raises(ValueError, match="n"):
        geometry.random_orthogonal(0)


# A separable, ill-conditioned quadratic: curvatures 1 .. 1000 on the axes.
N = 32
D = torch.logspace(0, 3, N, dtype=torch.float64)


def _quadratic(x):
    return 0.5 * (D * x * x).sum()


def _descend(opt_cls, loss_fn, x0, steps=300, **kw):
    x = torch.nn.Parameter(x0.clone())
    opt = opt_cls([x], **kw)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(x).backward()
        opt.step()
    return float(loss_fn(x.detach()))


def test_rotation_hurts_adam_not_sgd():
    x0 = torch.ones(N, dtype=torch.float64)
    rot, q = geometry.rotate_loss(_quadratic, N, seed=0, dtype=torch.float64)
    w0 = q.t() @ x0
    assert float(rot(w0)) == pytest.approx(float(_quadratic(x0)), rel=1e-12)
    sgd = dict(lr=1.5e-3)
    plain, rotated = (
        _descend(torch.optim.SGD, _quadratic, x0, **sgd),
        _descend(torch.optim.SGD, rot, w0, **sgd),
    )
    assert rotated == pytest.approx(plain, rel=1e-8)  # gradient descent is equivariant
    adam = dict(lr=1e-2, betas=(0.9, 0.999))
    plain, rotated = (
        _descend(torch.optim.Adam, _quadratic, x0, **adam),
        _descend(torch.optim.Adam, rot, w0, **adam),
    )
    assert rotated > 100 * plain  # Adam relies on the axes


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))


def test_rotated_module_sgd_matches_plain_and_sync():
    x, y = torch.randn(32, 8), torch.randn(32, 1)
    plain = _mlp()
    rot = geometry.Rotated(_mlp(), seed=1)
    assert torch.allclose(rot(x), plain(x), atol=1e-5)
    assert not any(p.requires_grad for p in rot.module.parameters())
    opts = [torch.optim.SGD(m.parameters(), lr=0.05) for m in (plain, rot)]
    for _ in range(20):
        for m, o in zip((plain, rot), opts):
            o.zero_grad()
            nn.functional.mse_loss(m(x), y).backward()
            o.step()
    assert torch.allclose(rot(x), plain(x), atol=1e-4)
    before = rot.module[0].weight.clone()
    rot.sync()
    assert torch.allclose(rot.module[0].weight, plain[0].weight, atol=1e-4)
    assert not torch.equal(before, rot.module[0].weight)
    # filter and size limit
    part = geometry.Rotated(_mlp(), filter=lambda n, p: n.startswith("0."))
    assert part.names == ["0.weight", "0.bias"] and part.module[2].weight.requires_grad
    with pytest.raises(ValueError, match="max_size"):
        geometry.Rotated(_mlp(), max_size=64)


class _Block(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = nn.Module()
        self.attn.q_proj, self.attn.k_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.attn.v_proj, self.attn.c_proj = nn.Linear(d, d), nn.Linear(d, d)
        self.mlp = nn.Module()
        self.mlp.c_fc, self.mlp.c_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)


class _GPT(nn.Module):
    def __init__(self, d=8):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(10, d), nn.Embedding(4, d)
        self.h = nn.ModuleList([_Block(d)])
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, 10, bias=False)


def test_classify_parameters():
    kinds = geometry.classify_parameters(_GPT())
    assert kinds["wte.weight"] == kinds["wpe.weight"] == "embedding"
    assert kinds["h.0.ln_1.weight"] == kinds["h.0.ln_1.bias"] == kinds["ln_f.weight"] == "norm"
    assert kinds["h.0.attn.q_proj.weight"] == kinds["h.0.attn.k_proj.bias"] == "qk"
    assert kinds["h.0.attn.v_proj.weight"] == kinds["h.0.attn.c_proj.weight"] == "vo"
    assert kinds["h.0.mlp.c_fc.weight"] == kinds["h.0.mlp.c_proj.weight"] == "ffn"
    assert kinds["lm_head.weight"] == "other"
    # torch's own layer: fused in_proj is "other", out_proj "vo", linear1/2 "ffn"
    enc = geometry.classify_parameters(nn.TransformerEncoderLayer(8, 2, 16))
    assert enc["self_attn.in_proj_weight"] == "other"
    assert enc["self_attn.out_proj.weight"] == "vo"
    assert enc["linear1.weight"] == enc["linear2.bias"] == "ffn"
    assert enc["norm1.weight"] == "norm"
    # LLaMA (Meta) names
    llama = nn.Module()
    llama.tok_embeddings = nn.Embedding(10, 8)
    llama.attention = nn.Module()
    for n in ("wq", "wk", "wv", "wo"):
        setattr(llama.attention, n, nn.Linear(8, 8, bias=False))
    llama.feed_forward = nn.Module()
    llama.feed_forward.w1 = nn.Linear(8, 8)
    llama.attention_norm = nn.Module()
    llama.attention_norm.weight = nn.Parameter(torch.ones(8))
    k = geometry.classify_parameters(llama)
    assert [
        k[n]
        for n in (
            "tok_embeddings.weight",
            "attention.wq.weight",
            "attention.wk.weight",
            "attention.wv.weight",
            "attention.wo.weight",
            "feed_forward.w1.weight",
            "attention_norm.weight",
        )
    ] == ["embedding", "qk", "qk", "vo", "vo", "ffn", "norm"]


def test_blockwise_lr_groups():
    model = _GPT()
    groups = geometry.blockwise_lr_groups(model, lr=1e-3)
    assert [g["name"] for g in groups] == ["embedding", "qk", "vo", "ffn", "norm", "other"]
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs == pytest.approx(
        {"embedding": 1e-2, "qk": 8e-3, "vo": 4e-3, "ffn": 6e-3, "norm": 1e-3, "other": 1e-3}
    )
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    for opt in (torch.optim.AdamW(groups), lowfp.optim.AdamW(groups)):
        assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in groups]
    g2 = geometry.blockwise_lr_groups(model, {"qk": 2.0}, lr=1.0)
    assert {g["name"]: g["lr_multiplier"] for g in g2}["qk"] == 2.0
    with pytest.raises(ValueError, match="block type"):
        geometry.blockwise_lr_groups(model, {"attention": 2.0}, lr=1.0)
    with pytest.raises(ValueError, match="multipliers"):
        geometry.blockwise_lr_groups(model, {"qk": -1.0}, lr=1.0)


def _rotated_diag(eigs, seed):
    q = geometry.random_orthogonal(len(eigs), seed=seed, dtype=torch.float64)
    return q @ torch.diag(torch.tensor(eigs, dtype=torch.float64)) @ q.t()


def test_sharpness_of_a_quadratic():
    A = _rotated_diag([7.0, 3.0, 2.0, 1.0, 0.5, 0.1], 0)
    B = torch.diag(torch.tensor([-9.0, 2.0, 1.0, 0.3], dtype=torch.float64))
    C = 0.1 * torch.randn(6, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = nn.Module()
    model.a = nn.Parameter(torch.randn(6, dtype=torch.float64))
    model.b = nn.Parameter(torch.randn(2, 2, dtype=torch.float64))

    def loss_fn(m, batch):
        a, b = m.a, m.b.reshape(-1)
        return 0.5 * a @ A @ a + 0.5 * b @ B @ b + a @ C @ b

    s = sharpness(model, loss_fn, None, {"a": [model.a], "b": [model.b]}, iters=200, tol=1e-12)
    assert s["a"] == pytest.approx(7.0, rel=1e-6)
    assert s["b"] == pytest.approx(-9.0, rel=1e-6)  # the largest magnitude, sign kept
    H = torch.cat([torch.cat([A, C], 1), torch.cat([C.t(), B], 1)], 0)
    ev = torch.linalg.eigvalsh(H)
    top = float(ev[ev.abs().argmax()])
    assert sharpness(model, loss_fn, None, iters=300, tol=1e-12)["all"] == pytest.approx(
        top, rel=1e-6
    )
    # param groups as blockwise_lr_groups makes them, and the model's mode is restored
    model.train()
    g = sharpness(model, loss_fn, None, [{"params": [model.a], "name": "x"}], iters=50)
    assert list(g) == ["x"] and model.training
    with pytest.raises(ValueError, match="iters"):
        sharpness(model, loss_fn, None, iters=0)
    # a parameter the loss ignores, or is linear in, has a zero Hessian block
    model.unused, model.lin = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    s = sharpness(
        model,
        lambda m, b: loss_fn(m, b) + m.lin.sum(),
        None,
        {"u": [model.unused], "l": [model.lin], "a+u": [model.a, model.unused]},
        iters=100,
        tol=1e-12,
    )
    assert s["u"] == 0.0 and s["l"] == 0.0 and s["a+u"] == pytest.approx(7.0, rel=1e-6)
