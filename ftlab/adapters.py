"""The Houlsby bottleneck adapter: the one method ftlab writes itself (peft has no bottleneck adapter).

Houlsby et al. (2019), §2.1: after the attention block's output projection and after the MLP's
down-projection, before each residual addition, insert

    h  ->  h + W_up · f(W_down · h + b_down) + b_up        W_down: m×d, W_up: d×m,  m ≪ d

so each adapter trains 2·d·m + d + m parameters (d = hidden size, m = bottleneck size). The
weights start near zero (normal, std 1e-2 as in the paper; biases 0), so the adapted model starts
as a near-identity of the pretrained one. Everything else stays frozen. (The paper also trains the
layer norms; ftlab keeps that a separate method, `ln_tuning`, so each row trains one thing.)
"""
from __future__ import annotations

import torch
from torch import nn

from ftlab.errors import ConfigError, check_int
from ftlab.shapes import check_adapter_size

# Where the adapters go, by Llama module names: the sub-layer outputs that feed a residual addition.
ADAPTER_AFTER = ("o_proj", "down_proj")


class Bottleneck(nn.Module):
    """down-projection, nonlinearity, up-projection, plus the residual."""

    def __init__(self, d: int, m: int):
        super().__init__()
        self.down = nn.Linear(d, m)
        self.up = nn.Linear(m, d)
        self.act = nn.GELU()
        for lin in (self.down, self.up):
            nn.init.normal_(lin.weight, std=1e-2)
            nn.init.zeros_(lin.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.down.weight.dtype)  # the adapter may be fp32 on a bf16 model (as peft keeps LoRA)
        return h + self.up(self.act(self.down(x))).to(h.dtype)


class AdaptedLinear(nn.Module):
    """A frozen linear layer followed by a trainable bottleneck adapter."""

    def __init__(self, base: nn.Module, m: int):
        super().__init__()
        self.base = base
        d = base.out_features
        self.adapter = Bottleneck(d, m).to(device=base.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.base(x))


def adapter_targets(model: nn.Module, method: str = "adapter") -> list:
    """[(name, module)] the adapters go after: every attention output and MLP output (by Llama names).
    ConfigError (field method, showing `method`: the name of the method row that asked, "adapter" by default)
    when the model has none."""
    targets = [(name, mod) for name, mod in model.named_modules() if name.rsplit(".", 1)[-1] in ADAPTER_AFTER]
    if not targets:
        raise ConfigError("method", method, f"a method this model can train: it has no {list(ADAPTER_AFTER)} "
                          "modules to put adapters after (ftlab places them by Llama-style module names)")
    return targets


def add_adapters(model: nn.Module, bottleneck: int, method: str = "adapter") -> int:
    """Freeze `model` and insert an adapter after every attention output and MLP output; returns how many.
    Everything is checked before the model changes: `bottleneck` is an integer from 1 to the hidden size
    (ConfigError naming adapter_size). `method`: the name of the method row that asked (see adapter_targets)."""
    if not isinstance(model, nn.Module):
        raise ConfigError("model", model if model is None else f"a {type(model).__name__}",
                          "a transformers model (load_model or load_for returns one)")
    bottleneck = check_int("adapter_size", bottleneck, 1)
    targets = adapter_targets(model, method)
    check_adapter_size(bottleneck, min(mod.out_features for _, mod in targets))
    for p in model.parameters():
        p.requires_grad = False
    for name, mod in targets:
        parent = model.get_submodule(name.rsplit(".", 1)[0])
        setattr(parent, name.rsplit(".", 1)[-1], AdaptedLinear(mod, bottleneck))
    return len(targets)
