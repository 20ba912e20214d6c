"""lowfp.optim under real training clients: transformers.Trainer (a tied-embedding GPT-2,
checkpoint and resume), Lightning (fit, checkpoint, resume), torch's LR schedulers
(OneCycleLR writing ``betas``), GradScaler, bfloat16 autocast, torch.compile, channels_last
convolutions and transposed parameters.

Where the same arithmetic runs twice (a resumed run against an uninterrupted one, one layout
against another, the same gradients through a wrapper) the results are compared bit for bit
with ``torch.equal``; the only tolerance is against ``torch.optim.AdamW``, which lowfp matches
to float32 rounding (README), not bit for bit.

Everything is tiny and synthetic (no downloads); the clients skip where they are not installed
(transformers' Trainer also needs accelerate).
"""

import math
import warnings

import pytest

torch = pytest.importorskip("torch")
import lowfp  # noqa: E402
import lowfp.optim as lo  # noqa: E402

nn = torch.nn
F = torch.nn.functional


# ---------------------------------------------------------------- shared helpers


def assert_same(a, b, path="state"):
    """Two (nested) state dicts are equal: tensors bit for bit (dtype, shape, values), the rest
    with ``==``."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        assert torch.is_tensor(a) and torch.is_tensor(b), path
        assert a.dtype == b.dtype and a.shape == b.shape, (
            f"{path}: {a.dtype}{tuple(a.shape)} vs {b.dtype}{tuple(b.shape)}"
        )
        assert torch.equal(a, b), f"{path}: tensors differ"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{path}: {a.keys()} vs {b.keys()}"
        for k in a:
            assert_same(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_params_equal(a, b):
    """Two modules' (or parameter lists') parameters, bit for bit."""
    pa = list(a.parameters()) if isinstance(a, nn.Module) else list(a)
    pb = list(b.parameters()) if isinstance(b, nn.Module) else list(b)
    assert len(pa) == len(pb)
    for i, (x, y) in enumerate(zip(pa, pb)):
        assert x.shape == y.shape and x.dtype == y.dtype
        assert torch.equal(x, y), f"parameter {i} (shape {tuple(x.shape)}) differs"


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.Tanh(), nn.Linear(64, 4))


def regression_batch(step, n=32):
    """A deterministic batch per step."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(n, 16, generator=g)
    return x, torch.sin(x[:, :4]) + 0.1 * torch.randn(n, 4, generator=g)


def quantized(opt, p, name="exp_avg"):
    st = opt.state[p]
    return f"{name}.codes" in st and st[f"{name}.codes"].dtype == torch.uint8 and name not in st


#: The optimizers whose steps the layout tests compare (all with low-bit states for every
#: tensor of the small models below).
LAYOUT_OPTIMIZERS = {
    "AdamW8bit": lambda ps: lo.AdamW8bit(ps, lr=1e-2, min_quant_size=0),
    "SGD-Linear8": lambda ps: lo.SGD(
        ps, lr=1e-2, momentum=0.9, momentum_codec=lowfp.Linear(8), min_quant_size=0
    ),
    "Muon8bit": lambda ps: lo.Muon8bit(
        ps, lr=1e-2, adamw_kwargs={"exp_avg": lowfp.Dynamic(8), "min_quant_size": 0}
    ),
}


@pytest.fixture(params=sorted(LAYOUT_OPTIMIZERS))
def make_opt(request):
    return LAYOUT_OPTIMIZERS[request.param]


# ---------------------------------------------------------------- transformers.Trainer


@pytest.fixture
def hf():
    """transformers, quiet, with Trainer usable (it needs accelerate)."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    old = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield transformers
    transformers.logging.set_verbosity(old)


class TokenData(torch.utils.data.Dataset):
    """Random token ids; labels = input_ids (causal LM)."""

    def __init__(self, n=64, seq=16, vocab=64, seed=0):
        self.ids = torch.randint(0, vocab, (n, seq), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def gpt2(hf, seed=0):
    """A tiny GPT-2 (dropout on) whose LM head is tied to the token embedding."""
    torch.manual_seed(seed)
    cfg = hf.GPT2Config(
        n_layer=2,
        n_head=2,
        n_embd=32,
        vocab_size=64,
        n_positions=32,
        bos_token_id=0,
        eos_token_id=0,
    )
    model = hf.GPT2LMHeadModel(cfg)
    assert model.lm_head.weight is model.transformer.wte.weight  # tie_word_embeddings
    return model


def train_args(hf, out, **kw):
    base = dict(
        output_dir=str(out),
        use_cpu=True,
        report_to=[],
        per_device_train_batch_size=8,
        max_steps=8,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        data_seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    base.update(kw)
    return hf.TrainingArguments(**base)


def inner(optimizer):
    """The optimizer under accelerate's AcceleratedOptimizer wrapper."""
    return optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer


def test_trainer_adamw8bit_tied_gpt2(hf, tmp_path):
    model = gpt2(hf)
    wte = model.transformer.wte.weight
    params = list(model.parameters())  # the tied weight once
    before = [p.detach().clone() for p in params]
    opt = lo.AdamW8bit(model.parameters(), lr=1e-3, min_quant_size=0)
    sched = hf.get_linear_schedule_with_warmup(opt, num_warmup_steps=2, num_training_steps=8)
    trainer = hf.Trainer(
        model=model,
        args=train_args(hf, tmp_path),
        train_dataset=TokenData(),
        optimizers=(opt, sched),
    )
    out = trainer.train()

    assert inner(trainer.optimizer) is opt
    assert trainer.state.global_step == 8
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert math.isfinite(out.training_loss)
    # the tie survived training, and its weight has one state, quantized
    assert model.lm_head.weight is wte
    assert sum(1 for p in opt.state if p is wte) == 1
    assert len(opt.state) == len(params) == len(opt.state_dict()["state"])
    assert all(quantized(opt, p, n) for p in params for n in ("exp_avg", "exp_avg_sq"))
    assert int(opt.state[wte]["step"]) == 8
    assert all(not torch.equal(a, b) for a, b in zip(before, params))
    assert opt.param_groups[0]["lr"] == 0.0  # the linear schedule ran to its end


def test_trainer_optimizer_cls_and_kwargs(hf, tmp_path):
    model = gpt2(hf)
    trainer = hf.Trainer(
        model=model,
        args=train_args(hf, tmp_path, max_steps=4, weight_decay=0.1),
        train_dataset=TokenData(),
        optimizer_cls_and_kwargs=(lo.AdamW8bit, {"lr": 1e-3}),
    )
    trainer.train()
    opt = inner(trainer.optimizer)
    assert type(opt) is lo.AdamW8bit
    # Trainer's two groups (decay / no decay) kept their own hyperparameters
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    ids = {id(p) for g in opt.param_groups for p in g["params"]}
    assert ids == {id(p) for p in model.parameters()}
    assert all(int(st["step"]) == 4 for st in opt.state.values())
    # the default min_quant_size (4096) quantizes the MLP matrices (32 x 128), not the rest
    c_fc = model.transformer.h[0].mlp.c_fc.weight
    assert c_fc.numel() == 4096 and quantized(opt, c_fc)
    assert not quantized(opt, model.transformer.wte.weight)
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)


def step_counter(hf):
    """A TrainerCallback counting the optimizer steps of one train() call."""

    class Count(hf.TrainerCallback):
        steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1

    return Count()


def test_trainer_resume_is_bit_identical(hf, tmp_path):
    def run(out, resume=None):
        model = gpt2(hf)
        count = step_counter(hf)
        trainer = hf.Trainer(
            model=model,
            args=train_args(hf, out, save_strategy="steps", save_steps=4),
            train_dataset=TokenData(),
            callbacks=[count],
            optimizer_cls_and_kwargs=(lo.AdamW8bit, {"lr": 1e-3, "min_quant_size": 0}),
        )
        trainer.train(resume_from_checkpoint=resume)
        assert trainer.state.global_step == 8
        return model, inner(trainer.optimizer), count.steps

    full, full_opt, n_full = run(tmp_path / "a")
    ckpt = tmp_path / "a" / "checkpoint-4"
    resumed, resumed_opt, n_resumed = run(tmp_path / "b", resume=str(ckpt))
    assert (n_full, n_resumed) == (8, 4)  # the second run did resume, at step 4

    assert resumed.lm_head.weight is resumed.transformer.wte.weight
    sa, sb = full.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert_same(full_opt.state_dict(), resumed_opt.state_dict())

    # the optimizer checkpoint is plain data, says what its bytes are
    sd = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert sd["lowfp"] == {"layout": lo.LAYOUT_VERSION, "optimizer": "AdamW8bit"}
    st = sd["state"][0]
    assert st["exp_avg.codes"].dtype == torch.uint8 and int(st["step"]) == 4
    assert st["exp_avg.codec"]["layout"] == lo.LAYOUT_VERSION
    assert st["exp_avg.codec"]["codec"]["codec"] == "dynamic"


# ---------------------------------------------------------------- Lightning


@pytest.fixture
def L():
    lightning = pytest.importorskip("lightning")
    import logging

    loggers = [logging.getLogger(n) for n in ("lightning", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    yield lightning
    for lg, lv in zip(loggers, levels):
        lg.setLevel(lv)


def lightning_module(L):
    class Regressor(L.LightningModule):
        """An MLP; each optimizer step's batch is a function of the global step, so a resumed
        fit sees the same data as an uninterrupted one whatever Lightning's data loop does
        with a dataloader that is not resumable (Lightning 2.6, resumed from a checkpoint at an
        epoch boundary, ran the new epoch's batches out of step with the uninterrupted fit, with
        torch.optim.AdamW too)."""

        def __init__(self):
            super().__init__()
            self.net = mlp(0)
            self.steps_seen = []

        def training_step(self, batch, batch_idx):
            x, y = regression_batch(self.global_step, n=8)
            self.steps_seen.append(self.global_step)
            return F.mse_loss(self.net(x + batch[0]), y)

        def configure_optimizers(self):
            opt = lo.AdamW8bit(self.parameters(), lr=1e-2, min_quant_size=0)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1.0 + s))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return Regressor()


def lightning_fit(L, root, steps, ckpt_path=None, save=None):
    module = lightning_module(L)
    trainer = L.Trainer(
        max_steps=steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=True,
        enable_model_summary=False,
        default_root_dir=str(root),
    )
    data = torch.utils.data.TensorDataset(torch.zeros(8, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(
            module,
            torch.utils.data.DataLoader(data, batch_size=8, shuffle=False),
            ckpt_path=ckpt_path,
        )
        if save is not None:
            trainer.save_checkpoint(save)
    assert trainer.global_step == steps
    return module, trainer


def test_lightning_fit_checkpoint_resume(L, tmp_path):
    full, full_tr = lightning_fit(L, tmp_path / "a", 6)
    opt = full_tr.optimizers[0]
    assert type(opt) is lo.AdamW8bit
    assert full.steps_seen == list(range(6))
    assert all(quantized(opt, p) and int(opt.state[p]["step"]) == 6 for p in full.parameters())

    ckpt = tmp_path / "step3.ckpt"
    lightning_fit(L, tmp_path / "b", 3, save=str(ckpt))
    resumed, res_tr = lightning_fit(L, tmp_path / "c", 6, ckpt_path=str(ckpt))
    assert resumed.steps_seen == [3, 4, 5]  # it resumed; it did not start over
    assert_params_equal(full, resumed)
    assert_same(opt.state_dict(), res_tr.optimizers[0].state_dict())
    assert res_tr.lr_scheduler_configs[0].scheduler.last_epoch == 6

    saved = torch.load(ckpt, weights_only=True)["optimizer_states"][0]
    assert saved["lowfp"] == {"layout": lo.LAYOUT_VERSION, "optimizer": "AdamW8bit"}
    assert all(
        int(st["step"]) == 3 and st["exp_avg.codes"].dtype == torch.uint8
        for st in saved["state"].values()
    )


# ---------------------------------------------------------------- LR schedulers


def adamw_reference_step(p, g, st, group):
    """lowfp's AdamW step with float32 states, in torch ops that round once each (no fused
    multiply-add; the square root through float64, which rounds float32 correctly):
    ``p·(1 − lr·wd)``, ``m += (1 − β1)(g − m)``, ``v = β2·v + (1 − β2)·g·g``,
    ``p −= lr/(1 − β1^t) · (m / (√v / √(1 − β2^t) + ε))``, the constants rounded from double to
    float32. torch.optim.AdamW computes the same expression with lerp_/addcmul_ (fused
    multiply-adds), addcdiv_ ((lr'·m)/d), and a float32 sqrt, hence only rounding-level
    agreement with it."""

    def c(x):
        return torch.tensor(x, dtype=torch.float32)

    lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    st["t"] += 1
    t = st["t"]
    m, v = st["m"], st["v"]
    p.mul_(c(1 - lr * wd))
    m.add_(c(1 - b1) * (g - m))
    v.copy_(c(b2) * v + c(1 - b2) * g * g)
    denom = v.double().sqrt().float() / torch.full_like(v, math.sqrt(1 - b2**t)) + c(eps)
    p.sub_(c(lr / (1 - b1**t)) * (m / denom))


def scheduled_run(opt, model, steps=20, sched=True, schedule=None):
    """Train `model` with `opt` on the regression batches; with `sched`, OneCycleLR drives the
    optimizer; with `schedule` (a list of (lr, betas)), each step's group values are set by
    hand. Returns the (lr, betas) each step ran with."""
    s = (
        torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=1e-2, total_steps=steps, cycle_momentum=True
        )
        if sched
        else None
    )
    used = []
    for i in range(steps):
        if schedule is not None:
            for g in opt.param_groups:
                g["lr"], g["betas"] = schedule[i]
        used.append((opt.param_groups[0]["lr"], tuple(opt.param_groups[0]["betas"])))
        x, y = regression_batch(i)
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
        if s is not None:
            s.step()
    return used


def test_onecycle_float32_adamw_bit_exact_and_matches_torch():
    ours, ref_model, torch_model = mlp(), mlp(), mlp()
    opt = lo.AdamW(ours.parameters(), lr=1e-3, exp_avg=None, exp_avg_sq=None)
    torch_opt = torch.optim.AdamW(torch_model.parameters(), lr=1e-3, foreach=False)
    used = scheduled_run(opt, ours)
    torch_used = scheduled_run(torch_opt, torch_model)
    assert used == torch_used  # the same schedule, betas included, reached both
    assert len({b for _, b in used}) > 5 and len({lr for lr, _ in used}) > 5

    # the exact reference, run on the same gradients with the schedule torch's scheduler made
    states = [
        dict(t=0, m=torch.zeros_like(p), v=torch.zeros_like(p)) for p in ref_model.parameters()
    ]
    group = dict(torch_opt.param_groups[0])
    for i, (lr, betas) in enumerate(torch_used):
        x, y = regression_batch(i)
        ref_model.zero_grad()
        F.mse_loss(ref_model(x), y).backward()
        group.update(lr=lr, betas=betas)
        with torch.no_grad():
            for p, st in zip(ref_model.parameters(), states):
                adamw_reference_step(p, p.grad, st, group)
    assert_params_equal(ours, ref_model)
    for p, st in zip(ours.parameters(), states):
        assert torch.equal(opt.state[p]["exp_avg"], st["m"])
        assert torch.equal(opt.state[p]["exp_avg_sq"], st["v"])

    # torch.optim.AdamW: the same arithmetic up to float32 rounding (fused multiply-adds,
    # another division order, a float32 sqrt). |p| < 2 and 20 steps of size <= max_lr: each
    # step may differ by about an ulp of p (<= 1.2e-7), so 20 steps stay within 1e-6 (seen: 3e-8).
    for a, b in zip(ours.parameters(), torch_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_onecycle_adamw8bit_reads_scheduled_betas():
    model, by_hand = mlp(), mlp()
    opt = lo.AdamW8bit(model.parameters(), lr=1e-3, min_quant_size=0)
    used = scheduled_run(opt, model)
    assert len({b for _, b in used}) > 5
    assert all(0.85 <= b1 <= 0.95 and b2 == 0.999 for _, (b1, b2) in used)
    assert all(quantized(opt, p) for p in model.parameters())
    # the same steps with the group values set by hand: the scheduler only writes the groups
    opt2 = lo.AdamW8bit(by_hand.parameters(), lr=1e-3, min_quant_size=0)
    assert scheduled_run(opt2, by_hand, sched=False, schedule=used) == used
    assert_params_equal(model, by_hand)
    assert_same(opt.state_dict()["state"], opt2.state_dict()["state"])
    # and the betas matter: a constant beta1 gives other bits
    other = mlp()
    opt3 = lo.AdamW8bit(other.parameters(), lr=1e-3, min_quant_size=0)
    scheduled_run(opt3, other, sched=False, schedule=[(lr, (0.9, 0.999)) for lr, _ in used])
    assert not torch.equal(other[0].weight, model[0].weight)


# ---------------------------------------------------------------- mixed precision


def test_grad_scaler_skips_inf_steps():
    try:
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    except (AttributeError, RuntimeError, TypeError) as e:  # pragma: no cover
        pytest.skip(f"torch.amp.GradScaler('cpu') unavailable: {e}")
    scaled, plain = mlp(), mlp()
    opt = lo.AdamW8bit(scaled.parameters(), lr=1e-2, min_quant_size=0)
    ref = lo.AdamW8bit(plain.parameters(), lr=1e-2, min_quant_size=0)
    bad, losses = 3, []
    for i in range(8):
        x, y = regression_batch(i)
        opt.zero_grad()
        loss = F.mse_loss(scaled(x), y)
        losses.append(loss.item())
        scaler.scale(loss).backward()
        if i == bad:
            scaled[0].weight.grad[0, 0] = float("inf")
            before = [p.detach().clone() for p in scaled.parameters()]
            states = {k: v.clone() for k, v in opt.state[scaled[0].weight].items()}
        scaler.step(opt)
        scaler.update()
        if i == bad:  # the scaler skipped the step (lowfp was not even called) and backed off
            assert_params_equal(before, scaled.parameters())
            assert_same(states, dict(opt.state[scaled[0].weight]))
            assert scaler.get_scale() == 2.0**15 and opt.skipped_steps == 0
            continue
        # power-of-two scaling is exact: the same step as without a scaler, bit for bit
        ref.zero_grad()
        F.mse_loss(plain(x), y).backward()
        ref.step()
        assert_params_equal(plain, scaled)
    assert_same(opt.state_dict(), ref.state_dict())
    assert all(int(st["step"]) == 7 for st in opt.state.values())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_bf16_autocast_forward_float32_params():
    def run():
        model = mlp()
        opt = lo.AdamW8bit(model.parameters(), lr=1e-2, min_quant_size=0)
        losses = []
        for i in range(30):
            x, y = regression_batch(i)
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
                assert out.dtype == torch.bfloat16
                loss = F.mse_loss(out.float(), y)
            loss.backward()
            assert all(p.grad.dtype == torch.float32 for p in model.parameters())
            opt.step()
            losses.append(loss.item())
        return model, opt, losses

    model, opt, losses = run()
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-5:]) < 0.8 * sum(losses[:5])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(quantized(opt, p) for p in model.parameters())
    again, _, _ = run()  # deterministic
    assert_params_equal(model, again)


# ---------------------------------------------------------------- torch.compile


def test_compiled_model_steps_its_original_parameters():
    model, twin = mlp(), mlp()
    try:
        compiled = torch.compile(model, backend="aot_eager")
        x, y = regression_batch(0)
        F.mse_loss(compiled(x), y).backward()
    except Exception as e:  # pragma: no cover - platform without a working torch.compile
        pytest.skip(f"torch.compile(backend='aot_eager') does not run here: {e!r}")
    model.zero_grad()
    opt = lo.AdamW8bit(compiled.parameters(), lr=1e-2, min_quant_size=0)
    ref = lo.AdamW8bit(twin.parameters(), lr=1e-2, min_quant_size=0)
    opt_params = [p for g in opt.param_groups for p in g["params"]]
    assert len(opt_params) == len(list(model.parameters()))
    assert all(a is b for a, b in zip(opt_params, model.parameters()))
    before = [p.detach().clone() for p in model.parameters()]
    losses = []
    for i in range(10):
        x, y = regression_batch(i)
        opt.zero_grad()
        loss = F.mse_loss(compiled(x), y)
        loss.backward()
        losses.append(loss.item())
        for p, q in zip(model.parameters(), twin.parameters()):
            q.grad = p.grad.clone()
        opt.step()
        ref.step()
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(quantized(opt, p) and int(opt.state[p]["step"]) == 10 for p in model.parameters())
    # the wrapper changes nothing the optimizer sees: the same gradients, the same bits
    assert_params_equal(model, twin)
    assert_same(opt.state_dict(), ref.state_dict())


# ---------------------------------------------------------------- memory layouts


def convnet(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 6 * 6, 10),
    )


def test_channels_last_equals_contiguous(make_opt):
    cl = convnet().to(memory_format=torch.channels_last)
    dense = convnet()
    convs = [m.weight for m in cl if isinstance(m, nn.Conv2d)]
    for w in convs:  # the layouts really differ
        assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    opt_cl, opt_dense = make_opt(cl.parameters()), make_opt(dense.parameters())
    for i in range(5):
        g = torch.Generator().manual_seed(i)
        x = torch.randn(4, 3, 8, 8, generator=g)
        y = torch.randint(0, 10, (4,), generator=g)
        dense.zero_grad()
        F.cross_entropy(dense(x), y).backward()
        for p, q in zip(cl.parameters(), dense.parameters()):
            p.grad = torch.empty_like(p).copy_(q.grad)  # p's layout, q's values
        for w in convs:
            assert w.grad.is_contiguous(memory_format=torch.channels_last)
        opt_cl.step()
        opt_dense.step()
        assert_params_equal(cl, dense)
    for w in convs:
        assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert_same(opt_cl.state_dict(), opt_dense.state_dict())
    # the states are the model's, not its layout's: they load into the other layout
    fresh = make_opt(convnet().parameters())
    fresh.load_state_dict(opt_cl.state_dict())
    assert_same(fresh.state_dict(), opt_dense.state_dict())


@pytest.mark.parametrize("grad_layout", ["like_param", "contiguous"])
def test_transposed_parameter_equals_contiguous_copy(make_opt, grad_layout):
    torch.manual_seed(0)
    base = torch.randn(64, 32)
    t = nn.Parameter(base.t())  # (32, 64), strides (1, 32)
    c = nn.Parameter(base.t().contiguous())
    start = c.detach().clone()
    assert not t.is_contiguous() and t.stride() == (1, 32) and torch.equal(t, c)
    opt_t, opt_c = make_opt([t]), make_opt([c])
    for i in range(5):
        g = torch.randn(32, 64, generator=torch.Generator().manual_seed(i))
        t.grad = torch.empty_like(t).copy_(g) if grad_layout == "like_param" else g.clone()
        c.grad = g.clone()
        opt_t.step()
        opt_c.step()
        assert torch.equal(t, c), f"step {i}"
    assert t.stride() == (1, 32)  # stepped in place, layout kept
    assert not torch.equal(t, start)
    assert_same(opt_t.state_dict(), opt_c.state_dict())
