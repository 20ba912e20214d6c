"""Written with lowfp at 606455c (layout 1: no codec descriptions): optimizer state dicts
after 3 steps and the weights after 2 more, for tests/test_optim_contract.py."""

import copy

import torch

import lowfp
import lowfp.optim as lo


def params():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(16, 32)), torch.nn.Parameter(torch.randn(300))]


def grads(ps, s):
    g = torch.Generator().manual_seed(s)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)


makers = {
    "AdamW8bit": lambda ps: lo.AdamW8bit(ps, lr=1e-2, min_quant_size=0),
    "SOLO": lambda ps: lo.SOLO(ps, bits=3, lr=1e-2, min_quant_size=0),
    "SGD": lambda ps: lo.SGD(
        ps, lr=1e-2, momentum=0.9, momentum_codec=lowfp.Linear(8), min_quant_size=0
    ),
    "Muon8bit": lambda ps: lo.Muon8bit(ps, lr=0.02, adamw_kwargs={"min_quant_size": 0}),
}
out = {}
for name, make in makers.items():
    ps = params()
    opt = make(ps)
    for s in range(3):
        grads(ps, s)
        opt.step()
    sd = copy.deepcopy(opt.state_dict())  # state_dict() shares the live tensors
    w3 = [p.detach().clone() for p in ps]
    for s in range(3, 5):
        grads(ps, s)
        opt.step()
    out[name] = {"state_dict": sd, "weights3": w3, "weights5": [p.detach().clone() for p in ps]}
torch.save(out, __file__.replace("make_optim_layout1.py", "optim_layout1.pt"))
