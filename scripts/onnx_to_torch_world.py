#!/usr/bin/env python
"""Recover the demo world's shipped ONNX recognisers and attribute nets as torch weights.

    python scripts/onnx_to_torch_world.py [--assets synthface/world/assets]

Writes assets/torch/{recognition,audit_recognition,attributes,audit_attributes}.safetensors + .json
(loadable with synthface.nets.load_backbone / load_world_model), so gradient-based methods can use
the very networks every shipped figure was measured with. Rerunnable: the files are rebuilt from the
ONNX files alone, and nothing is written unless each recovered network reproduces onnxruntime's
outputs on rendered faces to --tol (relative).

How: the exporter kept the names of the parameters it did not touch (linear layers, the embedding's
BatchNorm1d, named PReLU slopes) and folded every BatchNorm2d into the convolution before it,
leaving anonymous `onnx::Conv_*` weights with a bias. Named initialisers are copied by name;
the convolutions and anonymous PReLU slopes are matched to the torch modules in execution order
(the export traced the same modules in that order), each shape checked. A folded convolution
keeps the folded kernel, and its BatchNorm2d becomes the identity plus the folded bias (mean 0,
variance 1, scale sqrt(1 + eps)), which is the same function in eval mode. genderage.onnx and
attributes.onnx were exported from one network: the age head comes from genderage.onnx, after
checking that every tensor the two files share is identical.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click
import numpy as np
import torch
from torch import nn

from synthface.nets import build_backbone, save_backbone

# name -> (ONNX file(s), arch, build kwargs); the kinds and sizes are those of scripts/build_world_models.py's SPECS
SOURCES = {
    "recognition": (["pack/recognition.onnx"], "world-recognizer",
                    {"kind": "resnet", "in_size": 112, "embedding_dim": 128}),
    "audit_recognition": (["audit/recognition.onnx"], "world-recognizer",
                          {"kind": "mobile", "in_size": 112, "embedding_dim": 128}),
    "attributes": (["attributes.onnx", "pack/genderage.onnx"], "world-attributes",
                   {"kind": "resnet", "in_size": 96, "age": True, "output": "logits"}),
    "audit_attributes": (["audit/attributes.onnx"], "world-attributes",
                         {"kind": "plain", "in_size": 112, "age": False, "output": "logits"}),
}
RECOGNITION_INPUT = {"size": 112, "channels": "RGB", "layout": "NCHW", "mean": 127.5, "std": 127.5,
                     "crop": "ffhq_arcface"}


def onnx_tensors(path: Path) -> tuple[dict, list]:
    """(named initialisers, [(op, [initialiser names of its inputs])] in graph order)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [(n.op_type, [i for i in n.input if i in inits]) for n in model.graph.node]
    return inits, nodes


def recover(net: nn.Module, path: Path) -> dict:
    """A state dict for `net` from one ONNX file; keys the file does not hold are left out."""
    inits, nodes = onnx_tensors(path)
    expected = net.state_dict()
    state, used = {}, set()
    for name, arr in inits.items():
        key = name[len("net."):] if name.startswith("net.") else name
        if key in expected:
            state[key] = torch.from_numpy(arr.copy()).reshape(expected[key].shape)
            used.add(name)
    # torch side, in execution order: each Conv2d with the BatchNorm2d right after it, and PReLUs
    convs, prelus, last_conv = [], [], None
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            convs.append([name, None])
            last_conv = name
        elif isinstance(m, nn.BatchNorm2d):
            if last_conv is None or convs[-1][1] is not None:
                raise click.ClickException(f"{name}: a BatchNorm2d that does not follow a convolution")
            convs[-1][1] = name
        elif isinstance(m, nn.PReLU) and f"{name}.weight" not in state:
            prelus.append(name)
    onnx_convs = [ins for op, ins in nodes if op == "Conv"]
    onnx_prelus = [ins[0] for op, ins in nodes if op == "PRelu" and ins and ins[0] not in used]
    if len(onnx_convs) != len(convs) or len(onnx_prelus) != len(prelus):
        raise click.ClickException(f"{path}: {len(onnx_convs)} convolutions and {len(onnx_prelus)} unnamed PReLUs, "
                                   f"the torch net has {len(convs)} and {len(prelus)}")
    for (conv, bn), ins in zip(convs, onnx_convs):
        w = torch.from_numpy(inits[ins[0]].copy())
        if tuple(w.shape) != tuple(expected[f"{conv}.weight"].shape):
            raise click.ClickException(f"{path}: {ins[0]} {tuple(w.shape)} does not fit {conv}.weight "
                                       f"{tuple(expected[conv + '.weight'].shape)}")
        state[f"{conv}.weight"] = w
        c = w.shape[0]
        bias = torch.from_numpy(inits[ins[1]].copy()) if len(ins) > 1 else torch.zeros(c)
        if bn is None:
            raise click.ClickException(f"{conv} has no BatchNorm2d to carry the folded bias")
        eps = dict(net.named_modules())[bn].eps
        state[f"{bn}.weight"] = torch.full((c,), 1.0 + eps).sqrt()
        state[f"{bn}.bias"] = bias
        state[f"{bn}.running_mean"] = torch.zeros(c)
        state[f"{bn}.running_var"] = torch.ones(c)
        state[f"{bn}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)
    for name, init in zip(prelus, onnx_prelus):
        state[f"{name}.weight"] = torch.from_numpy(inits[init].copy()).reshape(expected[f"{name}.weight"].shape)
    # a training-time counter ONNX does not keep; eval mode never reads it
    for k, v in expected.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = torch.zeros_like(v)
    return state


def build_state(arch: str, kw: dict, files: list[Path]) -> tuple[nn.Module, dict]:
    net = build_backbone(arch, **kw)
    state = recover(net, files[0])
    for extra in files[1:]:
        other = recover(net, extra)
        for k in state.keys() & other.keys():
            if not torch.equal(state[k], other[k]):
                raise click.ClickException(f"{files[0]} and {extra} differ in {k}: not exported from one network")
        state = {**other, **state}
    missing = [k for k in net.state_dict() if k not in state]
    if missing:
        raise click.ClickException(f"{', '.join(str(f) for f in files)} leave {missing[0]!r} unknown")
    net.load_state_dict(state, strict=True)
    return net.eval(), state


def faces(n: int, seed: int = 0) -> np.ndarray:
    from synthface.world import BALANCED, World

    world = World(seed=seed, distribution=BALANCED)
    ident = world.identities(list(range(950_000, 950_000 + n)))
    return world.render(ident, np.zeros(n, int), 64)


def onnx_outputs(path: Path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


def verify(net: nn.Module, onnx_path: Path, images: np.ndarray, size: int, mean: float, std: float,
           crop: str) -> float:
    from synthface.world.models import crop_batch

    x = (crop_batch(images, "arcface" if crop == "ffhq_arcface" else "attribute") - mean) / std
    assert x.shape[-1] == size
    ref = onnx_outputs(onnx_path, x)
    with torch.no_grad():
        out = net(x).numpy()
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@click.command()
@click.option("--assets", default="synthface/world/assets", show_default=True, type=click.Path(path_type=Path))
@click.option("--tol", default=1e-5, show_default=True, help="largest relative error against onnxruntime")
@click.option("--faces", "n_faces", default=64, show_default=True, help="rendered faces to verify on")
def main(assets, tol, n_faces):
    torch.set_num_threads(1)
    images = faces(n_faces)
    for name, (rel_files, arch, kw) in SOURCES.items():
        files = [assets / f for f in rel_files]
        net, _ = build_state(arch, kw, files)
        if arch == "world-recognizer":
            inp, extra = RECOGNITION_INPUT, {}
        else:
            side = json.loads(files[0].with_suffix(".json").read_text())
            inp, extra = side["input"], {"attributes": side["attributes"]}
        errors = {}
        for f in files:
            # genderage.onnx reads the same net through the genderage head
            if arch == "world-attributes":
                net.output = "genderage" if f.name == "genderage.onnx" else "logits"
            errors[str(f.relative_to(assets))] = verify(net, f, images, inp["size"], inp["mean"], inp["std"],
                                                        inp["crop"])
        if arch == "world-attributes":
            net.output = "logits"
        worst = max(errors.values())
        click.echo(f"{name}: max relative error against onnxruntime {worst:.2e} ({errors})")
        if worst > tol:
            raise click.ClickException(f"{name} does not reproduce its ONNX file to {tol}; nothing written")
        out = assets / "torch" / f"{name}.safetensors"
        save_backbone(net, arch, out, input=inp, **extra,
                      source={str(f.relative_to(assets)): sha256(f) for f in files},
                      max_rel_error_vs_onnx=errors,
                      note="recovered from the ONNX initialisers by scripts/onnx_to_torch_world.py; BatchNorm2d "
                           "layers hold the exporter's folded biases (identity statistics), equal in eval mode")
        click.echo(f"  wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
