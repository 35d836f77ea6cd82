"""Bias + activation + gain + clamp, the epilogue of every StyleGAN2 layer.

Pure-PyTorch implementation. It is the ground truth for the CUDA kernel and the
path used on CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import cuda_ops


@dataclass(frozen=True)
class Activation:
    func: Callable[[torch.Tensor, float], torch.Tensor]
    default_alpha: float
    default_gain: float


# Default gains keep the activation variance close to 1 for unit-variance input.
ACTIVATIONS: dict[str, Activation] = {
    "linear": Activation(lambda x, a: x, 0.0, 1.0),
    "relu": Activation(lambda x, a: F.relu(x), 0.0, math.sqrt(2)),
    "lrelu": Activation(lambda x, a: F.leaky_relu(x, a), 0.2, math.sqrt(2)),
    "tanh": Activation(lambda x, a: torch.tanh(x), 0.0, 1.0),
    "sigmoid": Activation(lambda x, a: torch.sigmoid(x), 0.0, 1.0),
    "elu": Activation(lambda x, a: F.elu(x), 0.0, 1.0),
    "selu": Activation(lambda x, a: F.selu(x), 0.0, 1.0),
    "softplus": Activation(lambda x, a: F.softplus(x), 0.0, 1.0),
    "swish": Activation(lambda x, a: torch.sigmoid(x) * x, 0.0, math.sqrt(2)),
}


def default_gain(act: str) -> float:
    return _lookup(act).default_gain


def _lookup(act: str) -> Activation:
    try:
        return ACTIVATIONS[act]
    except KeyError:
        raise ValueError(f"unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}") from None


def bias_act(
    x: torch.Tensor,
    b: Optional[torch.Tensor] = None,
    dim: int = 1,
    act: str = "linear",
    alpha: Optional[float] = None,
    gain: Optional[float] = None,
    clamp: Optional[float] = None,
) -> torch.Tensor:
    """y = clamp(act(x + b, alpha) * gain, -clamp, clamp), with b broadcast along `dim`.
    CUDA tensors use the kernel in csrc/bias_act.cu when it is available (see _plugin)."""
    spec = _lookup(act)
    alpha = spec.default_alpha if alpha is None else float(alpha)
    gain = spec.default_gain if gain is None else float(gain)
    clamp = None if clamp is None or clamp < 0 else float(clamp)
    if cuda_ops.active(x):
        if b is not None and (b.ndim != 1 or b.shape[0] != x.shape[dim]):
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match dim {dim} of x {tuple(x.shape)}")
        return cuda_ops.BiasAct.apply(x, b, dim % x.ndim, act, alpha, gain, clamp, bias_act_ref)
    return bias_act_ref(x, b, dim, act, alpha, gain, clamp)


def bias_act_ref(x, b=None, dim=1, act="linear", alpha=0.0, gain=1.0, clamp=None):
    """The pure-PyTorch path, with resolved alpha, gain and clamp."""
    spec = _lookup(act)

    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match dim {dim} of x {tuple(x.shape)}")
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.to(x.dtype).reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x
