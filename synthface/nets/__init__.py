"""Network definitions and their weight files: face-recognition backbones and the demo world's small nets.

    build_backbone(arch, embedding_dim=512, **kw)   a fresh, randomly initialised network
    load_backbone(path, arch=None)                  weights from an arcface_torch `.pt`/`.pth` state dict
                                                    or synthface's `.safetensors` + JSON sidecar, in eval mode
    save_backbone(module, arch, path, **meta)       safetensors + JSON sidecar, each written atomically
    load_world_model(name)                          the demo world's recognisers / attribute nets as torch

Architectures: r18, r34, r50, r100, r200 (IResNet), mbf, mbf_large (MobileFaceNet), with
arcface_torch's parameter names; world-recognizer and world-attributes (the demo world's nets).
Face-recognition backbones take an aligned 112x112 RGB batch normalised as (x - 127.5) / 127.5 and
return the (un-normalised) embedding. Loading never executes code from the file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import nn

from ..errors import SynthfaceError
from ..fileio import atomic_write, write_json_atomic
from ..weights import load_torch_file
from .iresnet import IRESNET_LAYOUTS, IResNet, iresnet
from .mobilefacenet import MBF_LAYOUTS, MobileFaceNet, mobilefacenet
from .world_nets import AttributeNet, AttributeOutputs, Recogniser

FORMAT = "synthface.backbone"
FORMAT_VERSION = 1
WORLD_ARCHS = ("world-recognizer", "world-attributes")
ARCHS = tuple(IRESNET_LAYOUTS) + tuple(MBF_LAYOUTS) + WORLD_ARCHS

ARCFACE_INPUT = {"size": 112, "channels": "RGB", "layout": "NCHW", "mean": 127.5, "std": 127.5,
                 "crop": "arcface_112"}

# name -> (file under synthface/world/assets/torch, overrides of the sidecar's arch kwargs)
_WORLD_ASSETS = Path(__file__).resolve().parent.parent / "world" / "assets" / "torch"
WORLD_MODELS = {
    "world-recognizer": ("recognition.safetensors", {}),
    "world-audit-recognizer": ("audit_recognition.safetensors", {}),
    "world-attributes": ("attributes.safetensors", {"output": "logits"}),
    "world-audit-attributes": ("audit_attributes.safetensors", {"output": "logits"}),
    # the same network as world-attributes (genderage.onnx and attributes.onnx were exported from it)
    "world-genderage": ("attributes.safetensors", {"output": "genderage"}),
}

__all__ = ["ARCHS", "build_backbone", "load_backbone", "save_backbone", "load_world_model", "infer_arch",
           "IResNet", "MobileFaceNet", "Recogniser", "AttributeNet", "AttributeOutputs"]


def build_backbone(arch: str, embedding_dim: int = 512, **kw) -> nn.Module:
    """A randomly initialised network. kw: fp16, dropout (IResNet); fp16 (MobileFaceNet); kind
    (resnet | mobile | plain) and in_size (world nets; the shipped recognisers use embedding_dim=128),
    output (logits | genderage) and age (world-attributes, which has no embedding: embedding_dim is
    ignored)."""
    given = dict(kw)
    try:
        if arch in IRESNET_LAYOUTS:
            net = iresnet(arch, embedding_dim, **kw)
        elif arch in MBF_LAYOUTS:
            net = mobilefacenet(arch, embedding_dim, **kw)
        elif arch == "world-recognizer":
            net = Recogniser(kw.pop("kind", "resnet"), embedding_dim, kw.pop("in_size", 112), **kw)
        elif arch == "world-attributes":
            net = AttributeOutputs(**kw)
        else:
            raise SynthfaceError(f"unknown backbone architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    except TypeError as e:
        raise SynthfaceError(f"bad settings for backbone {arch}: {e}") from None
    # remembered so save_backbone can write them into the sidecar
    net.synthface_arch = {"arch": arch, "embedding_dim": None if arch == "world-attributes" else embedding_dim,
                          "kwargs": given}
    return net


# ------------------------------------------------------------------------------ architecture from tensors

def _block_counts(keys, pattern: str) -> dict[int, int]:
    """{stage: number of blocks} from keys such as layer2.5.conv1.weight."""
    counts: dict[int, int] = {}
    for k in keys:
        m = re.match(pattern, k)
        if m:
            stage, block = int(m.group(1)), int(m.group(2))
            counts[stage] = max(counts.get(stage, 0), block + 1)
    return counts


def infer_arch(state: dict) -> tuple[str, dict]:
    """(arch, build kwargs including embedding_dim) from a state dict's names and shapes, or a
    SynthfaceError saying why not."""
    keys = set(state)
    if "fc.weight" in keys and "layer1.0.conv1.weight" in keys:
        counts = _block_counts(keys, r"layer(\d)\.(\d+)\.")
        layout = tuple(counts.get(i, 0) for i in (1, 2, 3, 4))
        for arch, known in IRESNET_LAYOUTS.items():
            if known == layout:
                return arch, {"embedding_dim": int(state["fc.weight"].shape[0])}
        raise SynthfaceError(f"an IResNet with {layout} blocks per stage is none of "
                             f"{', '.join(f'{a} {v}' for a, v in IRESNET_LAYOUTS.items())}")
    if "conv_sep.layers.0.weight" in keys and "layers.0.layers.0.weight" in keys:
        scale = int(state["layers.0.layers.0.weight"].shape[0]) // 64
        # layers.1 is one grouped conv unit (mbf) or a stage of bottlenecks (mbf_large)
        stages = _block_counts(keys, r"layers\.([1357])\.layers\.(\d+)\.layers\.")
        first = 1 if "layers.1.layers.0.weight" in keys else stages.get(1, 0)
        layout = (first, stages.get(3, 0), stages.get(5, 0), stages.get(7, 0))
        for arch, (blocks, s) in MBF_LAYOUTS.items():
            if blocks == layout and s == scale:
                return arch, {"embedding_dim": int(state["features.layers.2.weight"].shape[0])}
        raise SynthfaceError(f"a MobileFaceNet with {layout} blocks and width x{scale} is none of "
                             f"{', '.join(MBF_LAYOUTS)}")
    if "features.0.weight" in keys and ("head.1.weight" in keys or "trunk.1.weight" in keys):
        kind = ("resnet" if "features.3.short.0.weight" in keys else
                "mobile" if "features.3.body.0.weight" in keys else "plain")
        # the global depthwise convolution's kernel is ceil(in_size / 16)
        gdc = [v for k, v in state.items() if re.fullmatch(r"features\.\d+\.weight", k) and v.ndim == 4
               and v.shape[1] == 1]
        if not gdc:
            raise SynthfaceError("a demo-world net without its global depthwise convolution")
        kw = {"kind": kind, "in_size": 16 * int(gdc[-1].shape[-1])}
        if "head.1.weight" in keys:
            return "world-recognizer", {"embedding_dim": int(state["head.1.weight"].shape[0]), **kw}
        return "world-attributes", {**kw, "age": "age.weight" in keys}
    sample = ", ".join(sorted(keys)[:4])
    raise SynthfaceError(f"cannot tell the architecture from the tensor names ({sample}, ...): pass arch= one "
                         f"of {', '.join(ARCHS)}")


def _check_tensors(state: dict, net: nn.Module, where: str, arch: str):
    """Name the first missing, unexpected or mis-shaped tensor (load_state_dict's message lists them all)."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    more = lambda xs: f" (and {len(xs) - 1} more)" if len(xs) > 1 else ""  # noqa: E731
    if missing:
        raise SynthfaceError(f"{where} does not fit {arch}: missing tensor {missing[0]!r}{more(missing)}")
    if unexpected:
        raise SynthfaceError(f"{where} does not fit {arch}: unexpected tensor {unexpected[0]!r}"
                             f"{more(unexpected)}")
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise SynthfaceError(f"{where}: tensor {k!r} has shape {tuple(state[k].shape)}, {arch} expects "
                                 f"{tuple(v.shape)}")


def _state_from_pt(path: Path) -> dict:
    # weights_only: pickled code is refused; the size check and messages are synthface.weights'
    obj = load_torch_file(path, "tensor state dict", fix="Save the model's weights with "
                          "torch.save(model.state_dict(), 'model.pt') where it was trained, and pass that file.")
    # arcface_torch's checkpoint_gpu_N.pt (save_all_states) holds the backbone under this key
    if isinstance(obj, dict) and "state_dict_backbone" in obj:
        obj = obj["state_dict_backbone"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SynthfaceError(f"{path} does not hold a state dict of tensors (as arcface_torch's train_v2.py "
                             "saves model.pt)")
    # saved from a DistributedDataParallel / DataParallel wrapper
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _sidecar_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _default_input(arch: str, kw: dict) -> dict:
    if arch == "world-attributes":
        return {"size": kw.get("in_size", 96), "channels": "RGB", "layout": "NCHW", "mean": 127.5, "std": 128.0}
    if arch == "world-recognizer":
        return {**ARCFACE_INPUT, "size": kw.get("in_size", 112)}
    return dict(ARCFACE_INPUT)


def load_backbone(path, arch: str | None = None) -> nn.Module:
    """Load a backbone in eval mode from an arcface_torch `.pt`/`.pth` state dict or synthface's
    `.safetensors` (+ `.json` sidecar). `arch` is inferred from the tensors (or read from the
    sidecar) when not given. The module carries `synthface_meta` (arch, embedding_dim, input convention)."""
    path = Path(path)
    if not path.is_file():
        raise SynthfaceError(f"backbone file {path} does not exist")
    meta: dict = {}
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise SynthfaceError(f"cannot read {path} as safetensors: {e}") from None
        side = _sidecar_path(path)
        if side.is_file():
            try:
                meta = json.loads(side.read_text())
            except json.JSONDecodeError as e:
                raise SynthfaceError(f"{side} is not valid JSON ({e})") from None
            if meta.get("format") != FORMAT or int(meta.get("format_version", 0)) > FORMAT_VERSION:
                raise SynthfaceError(f"{side} is not a {FORMAT} sidecar of version <= {FORMAT_VERSION} "
                                     "(upgrade synthface to read newer files)")
    elif path.suffix in (".pt", ".pth"):
        state = _state_from_pt(path)
    else:
        raise SynthfaceError(f"{path}: a backbone file ends in .pt, .pth (arcface_torch) or .safetensors (synthface)")

    if arch is None and meta.get("arch"):
        arch = meta["arch"]
        kw = {"embedding_dim": meta.get("embedding_dim", 512), **meta.get("arch_kwargs", {})}
    elif arch is None:
        arch, kw = infer_arch(state)
    else:
        if arch not in ARCHS:
            raise SynthfaceError(f"unknown backbone architecture {arch!r}; choose one of {', '.join(ARCHS)}")
        try:
            inferred, kw = infer_arch(state)
            kw = kw if inferred == arch else {}
        except SynthfaceError:
            kw = {}  # the tensor check below names what does not fit
        if meta.get("arch") == arch:
            kw = {**kw, "embedding_dim": meta.get("embedding_dim", 512), **meta.get("arch_kwargs", {})}
    if arch == "world-attributes":
        kw.pop("embedding_dim", None)
    net = build_backbone(arch, **kw)
    _check_tensors(state, net, str(path), arch)
    net.load_state_dict(state, strict=True)
    net.synthface_meta = {"arch": arch, "embedding_dim": kw.get("embedding_dim"),
                          "input": meta.get("input") or _default_input(arch, kw),
                          "output": meta.get("output", "embedding" if arch != "world-attributes" else kw.get(
                              "output", "logits")),
                          "path": str(path)}
    return net.eval()


def save_backbone(module: nn.Module, arch: str, path, **meta) -> Path:
    """Write `module`'s state dict as safetensors and a JSON sidecar beside it (same stem), each
    atomically, the sidecar last. meta: anything JSON-serialisable to keep (e.g. training settings);
    `input`, `arch_kwargs` and `embedding_dim` override what the module recorded when it was built."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise SynthfaceError(f"{path}: save a backbone to a .safetensors file")
    if arch not in ARCHS:
        raise SynthfaceError(f"unknown backbone architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    built = getattr(module, "synthface_arch", None) or {}
    kw = meta.pop("arch_kwargs", None)
    if kw is None:
        kw = dict(built.get("kwargs", {})) if built.get("arch") == arch else {}
    kw.pop("fp16", None)  # a run-time choice, not part of the weights
    emb = meta.pop("embedding_dim", built.get("embedding_dim") if built.get("arch") == arch else None)
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    if emb is None and arch != "world-attributes":
        emb = int(state["fc.weight" if arch in IRESNET_LAYOUTS else
                        "features.layers.2.weight" if arch in MBF_LAYOUTS else "head.1.weight"].shape[0])
    sidecar = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch, "embedding_dim": emb,
               "arch_kwargs": kw, "input": meta.pop("input", None) or _default_input(arch, kw),
               "output": meta.pop("output", "embedding" if arch != "world-attributes" else kw.get("output", "logits")),
               **meta}
    json.dumps(sidecar)  # fail before writing anything if meta is not serialisable
    atomic_write(path, lambda f: f.write(save(state)))
    write_json_atomic(_sidecar_path(path), sidecar)
    return path


def load_world_model(name: str) -> nn.Module:
    """The demo world's shipped recogniser or attribute net as a differentiable torch module (eval
    mode), numerically the network of the matching ONNX file. Names: world-recognizer,
    world-audit-recognizer, world-attributes, world-audit-attributes, world-genderage."""
    if name not in WORLD_MODELS:
        raise SynthfaceError(f"unknown world model {name!r}; choose one of {', '.join(WORLD_MODELS)}")
    file, overrides = WORLD_MODELS[name]
    path = _WORLD_ASSETS / file
    if not path.is_file():
        raise SynthfaceError(f"{path} is missing; rebuild it with python scripts/onnx_to_torch_world.py")
    net = load_backbone(path)
    if "output" in overrides:
        net.output = overrides["output"]
        net.synthface_meta["output"] = overrides["output"]
    net.synthface_meta["name"] = name
    return net
