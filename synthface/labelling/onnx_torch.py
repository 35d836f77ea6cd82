"""A small ONNX graph run with torch ops, so gradients flow through an ONNX regressor or classifier.

Variation refinement (synthface.identity.refine) steers generated faces toward target nuisance values
by backpropagating through the nuisance regressor; onnxruntime gives no gradients, so the graph's
initialisers are read into tensors and its nodes evaluated in order with the matching torch functions.
Only the operators small CNN heads use are supported; any other is named in the error. Reading the
file executes nothing from it (the ONNX protobuf holds data and operator names only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import SynthfaceError


def _pads(a: dict, dims: int = 2) -> tuple:
    p = list(a.get("pads", [0] * (2 * dims)))
    if p[:dims] != p[dims:]:
        raise SynthfaceError(f"asymmetric padding {p} is not supported")
    return tuple(p[:dims])


def _conv(x, a, w, b=None):
    return F.conv2d(x, w, b, stride=tuple(a.get("strides", [1, 1])), padding=_pads(a),
                    dilation=tuple(a.get("dilations", [1, 1])), groups=int(a.get("group", 1)))


def _gemm(x, a, w, c=None):
    if a.get("transA", 0):
        x = x.t()
    if a.get("transB", 0):
        w = w.t()
    y = a.get("alpha", 1.0) * (x @ w)
    return y if c is None else y + a.get("beta", 1.0) * c


def _bn(x, a, scale, bias, mean, var):
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=a.get("epsilon", 1e-5))


def _reshape(x, a, shape):
    shape = [int(v) for v in shape.tolist()]
    shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]  # 0: copy that dimension
    return x.reshape(shape)


OPS: dict[str, Callable] = {
    "Conv": _conv,
    "Relu": lambda x, a: F.relu(x),
    "LeakyRelu": lambda x, a: F.leaky_relu(x, a.get("alpha", 0.01)),
    "PRelu": lambda x, a, s: torch.where(x >= 0, x, x * s),
    "Sigmoid": lambda x, a: torch.sigmoid(x),
    "Flatten": lambda x, a: x.flatten(int(a.get("axis", 1))),
    "Gemm": _gemm,
    "MatMul": lambda x, a, w: x @ w,
    "Add": lambda x, a, y: x + y,
    "Sub": lambda x, a, y: x - y,
    "Mul": lambda x, a, y: x * y,
    "BatchNormalization": _bn,
    "GlobalAveragePool": lambda x, a: x.mean((2, 3), keepdim=True),
    "MaxPool": lambda x, a: F.max_pool2d(x, tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])),
                                         _pads(a)),
    "AveragePool": lambda x, a: F.avg_pool2d(x, tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])),
                                             _pads(a)),
    "Reshape": _reshape,
    "Identity": lambda x, a: x,
    "Concat": lambda x, a, *ys: torch.cat([x, *ys], int(a["axis"])),
}


class OnnxAsTorch:
    """`module(x)` evaluates the ONNX graph at `path` on a float tensor [N, C, H, W] with torch ops
    (first output only); the weights are constants, so gradients flow to x alone."""

    def __init__(self, path):
        import onnx
        from onnx import helper, numpy_helper

        self.path = Path(path)
        try:
            m = onnx.load(str(self.path))
        except Exception as e:  # onnx raises protobuf's own errors for unreadable files
            raise SynthfaceError(f"{self.path}: not a readable ONNX model ({e})") from None
        g = m.graph
        self.consts = {i.name: torch.from_numpy(np.array(numpy_helper.to_array(i), copy=True)) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant":
                self.consts[n.output[0]] = torch.from_numpy(np.array(numpy_helper.to_array(n.attribute[0].t), copy=True))
        self.nodes = [(n.op_type, list(n.input), n.output[0],
                       {at.name: helper.get_attribute_value(at) for at in n.attribute})
                      for n in g.node if n.op_type != "Constant"]
        unknown = sorted({op for op, *_ in self.nodes} - set(OPS))
        if unknown:
            raise SynthfaceError(f"{self.path}: operators {', '.join(unknown)} have no torch counterpart here "
                                 f"(supported: {', '.join(sorted(OPS))}); refinement needs a differentiable model")
        inputs = [i.name for i in g.input if i.name not in self.consts]
        self.input, self.output = inputs[0], g.output[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if any(v.device != x.device for v in self.consts.values()):  # follow the input (e.g. a CUDA generator)
            self.consts = {k: v.to(x.device) for k, v in self.consts.items()}
        env = dict(self.consts)
        env[self.input] = x
        for op, ins, out, attrs in self.nodes:
            args = [env[i] for i in ins if i]
            env[out] = OPS[op](args[0], attrs, *args[1:])
        return env[self.output]
