"""Read StyleGAN2 generators from the files users have, and write the project's own format.

Supported inputs, detected from the file's bytes (not its name):
  * NVIDIA stylegan2-ada-pytorch / stylegan3 network pickles (`G_ema` is used);
  * old TensorFlow StyleGAN2 pickles (a (G, D, Gs) tuple; `Gs` is converted);
  * `.safetensors` files written by synthface (weights + config in the metadata).
Pickles go through `safe_pickle.RestrictedUnpickler`: nothing in them is executed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from ..errors import CheckpointError, SynthfaceError
from .networks import CPU_PRECISIONS, Generator
from ..weights import scrub_torch_advice
from .safe_pickle import EasyDict, PersistentStub, TFNetworkStub, restricted_load
from ..fileio import atomic_write

FORMAT_NAME = "synthface.stylegan2.generator"
FORMAT_VERSION = 1

PathLike = Union[str, os.PathLike]

_TOP_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_SYNTHESIS_KEYS = {"channel_base", "channel_max", "num_fp16_res", "architecture", "resample_filter", "conv_clamp",
                   "use_noise", "activation", "fp16_channels_last", "kernel_size"}
# Accepted but not part of the network's structure.
_RUNTIME_KEYS = {"fused_modconv_default"}


@dataclass
class CheckpointInfo:
    path: str
    format: str  # 'nvidia-pickle' | 'tf-pickle' | 'safetensors'
    config: dict
    source: str = ""  # e.g. 'stylegan2-ada-pytorch', 'stylegan3 (StyleGAN2 network)', 'tensorflow'
    notes: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)  # a synthface .safetensors file's extra metadata (e.g. tuned_from)


# --------------------------------------------------------------------------------------- detection


def detect_format(path: PathLike) -> str:
    """Return 'pickle', 'safetensors' or raise CheckpointError naming what the file is."""
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"network file not found: {p}")
    if p.is_dir():
        raise CheckpointError(f"{p} is a directory; pass the network file itself (.pkl or .safetensors)")
    size = p.stat().st_size
    if size == 0:
        raise CheckpointError(f"{p} is empty (0 bytes); the download or copy probably failed")
    with open(p, "rb") as f:
        head = f.read(16)
    if head[:4] == b"PK\x03\x04":
        raise CheckpointError(
            f"{p} is a torch.save() zip archive, not a StyleGAN2 network pickle. synthface reads NVIDIA's .pkl "
            f"networks (stylegan2-ada-pytorch, stylegan3, TensorFlow stylegan2) and .safetensors files it wrote."
        )
    if len(head) >= 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= size - 8 and head[8:9] == b"{":
            return "safetensors"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "pickle"
    if head[:1] in (b"(", b"}", b"]", b"c"):  # protocol 0/1 pickles
        return "pickle"
    raise CheckpointError(
        f"{p} is neither a network pickle nor a .safetensors file (first bytes {head[:8]!r}); "
        f"check that it is the right file and that it downloaded completely"
    )


def file_sha256(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------------------- reading


def read_checkpoint(path: PathLike) -> tuple[dict, dict[str, torch.Tensor], CheckpointInfo]:
    """(generator config, tensors by state-dict name, info) without building a network."""
    fmt = detect_format(path)
    if fmt == "safetensors":
        return _read_safetensors(path)
    data = _unpickle(path)
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, TFNetworkStub) for n in data):
        return _read_tf(data[2], path)
    if isinstance(data, TFNetworkStub):
        return _read_tf(data, path)
    if isinstance(data, dict):
        stub = data.get("G_ema", data.get("G"))
        if stub is None:
            keys = ", ".join(sorted(map(str, data.keys()))) or "nothing"
            raise CheckpointError(f"{path} holds no generator: expected a 'G_ema' or 'G' entry, found {keys}")
    else:
        stub = data
    if not isinstance(stub, PersistentStub):
        raise CheckpointError(f"{path} holds no StyleGAN2 generator (found a {type(stub).__name__})")
    return _read_nvidia(stub, path)


def _unpickle(path: PathLike) -> Any:
    try:
        with open(path, "rb") as f:
            return restricted_load(f)
    except CheckpointError:
        raise
    except EOFError:
        raise CheckpointError(f"{path} ends early: the file is truncated (incomplete download or copy?)") from None
    except Exception as e:  # noqa: BLE001 - corrupt bytes surface as many exception types inside pickle/torch
        why = scrub_torch_advice(str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)[:200]
        raise CheckpointError(f"{path} is not a readable network pickle; it looks corrupt or truncated ({why})") from None


def _read_nvidia(stub: PersistentStub, path: PathLike):
    if stub.class_name != "Generator":
        raise CheckpointError(f"{path}: expected a Generator network, found a {stub.class_name!r}")
    tensors = stub.named_tensors()
    is_sg3 = any(k.startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", k) for k in tensors)
    if is_sg3 or "class SynthesisInput" in stub.module_src:
        raise CheckpointError(
            f"{path} is a StyleGAN3 (alias-free) generator, which synthface does not support yet; "
            f"use a StyleGAN2 network (e.g. stylegan2-ffhq-1024x1024.pkl or stylegan2-ada ffhq.pkl)"
        )
    if "synthesis.b4.const" not in tensors:
        raise CheckpointError(f"{path}: the Generator has no 'synthesis.b4.const' tensor; it is not a StyleGAN2 network")
    kwargs = stub.init_kwargs
    for name, value in zip(_TOP_KEYS, stub.init_args):
        kwargs.setdefault(name, value)
    missing = [k for k in _TOP_KEYS if k not in kwargs]
    if missing:
        raise CheckpointError(f"{path}: the Generator's recorded constructor arguments lack {missing}")
    mapping = dict(kwargs.pop("mapping_kwargs", None) or {})
    synthesis = dict(kwargs.pop("synthesis_kwargs", None) or {})
    nested = bool(synthesis)
    top = {k: kwargs.pop(k) for k in _TOP_KEYS}
    synthesis.update(kwargs)  # stylegan3's networks_stylegan2 passes synthesis kwargs flat
    if "mapping.w_avg" not in tensors:
        mapping["w_avg_beta"] = None
    config = _normalise_config(top, mapping, synthesis, where=str(path))
    source = "stylegan2-ada-pytorch" if nested else "stylegan3 repository (StyleGAN2 network)"
    return config, tensors, CheckpointInfo(str(path), "nvidia-pickle", config, source)


def _normalise_config(top: dict, mapping: dict, synthesis: dict, where: str) -> dict:
    unknown = sorted(set(mapping) - _MAPPING_KEYS)
    if unknown:
        raise CheckpointError(f"{where}: unknown mapping network setting(s) {unknown}; not a StyleGAN2 generator?")
    unknown = sorted(set(synthesis) - _SYNTHESIS_KEYS - _RUNTIME_KEYS)
    if unknown:
        raise CheckpointError(f"{where}: unknown synthesis network setting(s) {unknown}; not a StyleGAN2 generator?")
    synthesis = {k: _plain(v) for k, v in synthesis.items() if k not in _RUNTIME_KEYS}
    mapping = {k: _plain(v) for k, v in mapping.items()}
    return dict({k: _plain(v) for k, v in top.items()}, mapping_kwargs=mapping, synthesis_kwargs=synthesis)


def _plain(v):
    """numpy scalars / EasyDicts / tuples -> JSON-friendly Python values."""
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (dict, EasyDict)):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v


# --------------------------------------------------------------------------------------- TensorFlow

_TF_KWARGS = {
    # tf name: (section, our name, default)
    "latent_size": (None, "z_dim", 512),
    "label_size": (None, "c_dim", 0),
    "dlatent_size": (None, "w_dim", 512),
    "resolution": (None, "img_resolution", 1024),
    "num_channels": (None, "img_channels", 3),
    "mapping_layers": ("mapping", "num_layers", 8),
    "label_fmaps": ("mapping", "embed_features", None),
    "mapping_fmaps": ("mapping", "layer_features", None),
    "mapping_nonlinearity": ("mapping", "activation", "lrelu"),
    "mapping_lrmul": ("mapping", "lr_multiplier", 0.01),
    "w_avg_beta": ("mapping", "w_avg_beta", 0.995),
    "fmap_base": ("synthesis", "channel_base", 16384),
    "fmap_max": ("synthesis", "channel_max", 512),
    "num_fp16_res": ("synthesis", "num_fp16_res", 0),
    "conv_clamp": ("synthesis", "conv_clamp", None),
    "architecture": ("synthesis", "architecture", "skip"),
    "resample_kernel": ("synthesis", "resample_filter", [1, 3, 3, 1]),
    "use_noise": ("synthesis", "use_noise", True),
    "nonlinearity": ("synthesis", "activation", "lrelu"),
}
_TF_IGNORED = {"truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure", "conditioning",
               "fused_modconv"}


def _read_tf(net: TFNetworkStub, path: PathLike):
    state = net.__dict__
    if int(state.get("version", 0)) < 4:
        raise CheckpointError(f"{path}: TensorFlow network pickle version {state.get('version')} is too old (need >= 4)")
    static = dict(state.get("static_kwargs") or {})
    unknown = sorted(set(static) - set(_TF_KWARGS) - _TF_IGNORED)
    if unknown:
        raise CheckpointError(f"{path}: unknown TensorFlow generator setting(s) {unknown}")
    top, mapping, synthesis = {}, {}, {}
    for tf_name, (section, name, default) in _TF_KWARGS.items():
        value = static.get(tf_name, default)
        if tf_name == "w_avg_beta" and value is None:
            value = 1.0  # TF "no tracking" still stores dlatent_avg
        if tf_name == "fmap_base":
            value = int(value) * 2  # TF counts channels from the previous stage
        {None: top, "mapping": mapping, "synthesis": synthesis}[section][name] = value

    tf = _collect_tf_variables(net)
    r_img = int(top["img_resolution"])
    for name in list(tf):
        m = re.fullmatch(r"synthesis/ToRGB_lod(\d+)/(.*)", name)
        if m:  # 'orig' architecture names its single ToRGB by level of detail
            r = r_img // 2 ** int(m.group(1))
            tf[f"synthesis/{r}x{r}/ToRGB/{m.group(2)}"] = tf.pop(name)
            synthesis["architecture"] = "orig"
    config = _normalise_config(top, mapping, synthesis, where=str(path))

    G = _build(config)
    tensors = {}
    for name in G.state_dict():
        value = _tf_value(name, tf, config)
        if value is None:
            continue  # recomputed buffer (resample_filter)
        if isinstance(value, str):
            raise CheckpointError(f"{path}: TensorFlow variable '{value}' (needed for '{name}') is missing")
        tensors[name] = torch.from_numpy(np.array(value, dtype=np.float32))  # copy keeps 0-d shapes
    for name, buf in G.state_dict().items():
        if name not in tensors:
            tensors[name] = buf
    info = CheckpointInfo(str(path), "tf-pickle", config, "tensorflow stylegan2")
    return config, tensors, info


def _collect_tf_variables(net: TFNetworkStub, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for name, value in net.__dict__.get("variables") or []:
        out[prefix + name] = np.asarray(value)
    for name, comp in (net.__dict__.get("components") or {}).items():
        out.update(_collect_tf_variables(comp, prefix + name + "/"))
    return out


def _tf_value(name: str, tf: dict, config: dict):
    """Our tensor `name` from TF variables (a numpy array), None for recomputed buffers,
    or the missing TF variable's name (str)."""

    def get(key):
        return tf[key] if key in tf else None

    def need(key, fn=lambda v: v):
        v = get(key)
        return key if v is None else fn(v)

    conv = lambda v: v.transpose(3, 2, 0, 1)  # [kh, kw, in, out] -> [out, in, kh, kw]
    conv_flip = lambda v: v[::-1, ::-1].transpose(3, 2, 0, 1)  # TF's up-sampling convs are stored flipped
    if name.endswith("resample_filter"):
        return None
    if name == "mapping.w_avg":
        return need("dlatent_avg")
    m = re.fullmatch(r"mapping\.embed\.(weight|bias)", name)
    if m:
        return need(f"mapping/LabelEmbed/{m.group(1)}", (lambda v: v.T) if m.group(1) == "weight" else (lambda v: v))
    m = re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", name)
    if m:
        return need(f"mapping/Dense{m.group(1)}/{m.group(2)}", (lambda v: v.T) if m.group(2) == "weight" else (lambda v: v))
    if name == "synthesis.b4.const":
        return need("synthesis/4x4/Const/const", lambda v: v[0])
    m = re.fullmatch(r"synthesis\.b(\d+)\.(conv0|conv1|torgb|skip)\.(.+)", name)
    if not m:
        return f"<no rule for {name}>"
    r, layer, leaf = int(m.group(1)), m.group(2), m.group(3)
    tf_layer = {"conv0": "Conv0_up", "conv1": "Conv" if r == 4 else "Conv1", "torgb": "ToRGB", "skip": "Skip"}[layer]
    base = f"synthesis/{r}x{r}/{tf_layer}"
    if leaf == "weight":
        return need(f"{base}/weight", conv_flip if layer in ("conv0", "skip") else conv)
    if leaf in ("bias", "noise_strength"):
        return need(f"{base}/{leaf}")
    if leaf == "affine.weight":
        return need(f"{base}/mod_weight", lambda v: v.T)
    if leaf == "affine.bias":
        return need(f"{base}/mod_bias", lambda v: v + 1)  # TF adds the 1 at run time
    if leaf == "noise_const":
        # TF numbers the noise inputs globally: 4x4 conv -> 0, then two per resolution.
        idx = 2 * int(math.log2(r)) - (5 if layer == "conv0" else 4)
        return need(f"synthesis/noise{idx}", lambda v: v[0, 0])
    return f"<no rule for {name}>"


# --------------------------------------------------------------------------------------- safetensors


def _read_safetensors(path: PathLike):
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable .safetensors file; it looks corrupt or truncated ({e})") from None
    if meta.get("format") != FORMAT_NAME:
        raise CheckpointError(
            f"{path} is a .safetensors file without synthface's generator config in its metadata "
            f"(format={meta.get('format')!r}); create one with `synthface convert NETWORK.pkl OUT.safetensors`"
        )
    version = int(meta.get("format_version", "0"))
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer synthface (format version {version}); upgrade synthface")
    try:
        config = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: the generator config in the metadata is unreadable ({e})") from None
    extra = {k: v for k, v in meta.items() if k not in ("format", "format_version", "config", "source")}
    info = CheckpointInfo(str(path), "safetensors", config, meta.get("source", "synthface"), metadata=extra)
    return config, tensors, info


def save_generator(G: Generator, path: PathLike, source: str = "synthface", extra_metadata: Optional[dict] = None):
    """Write G as .safetensors (weights + config), atomically: a crash never leaves a half file."""
    from safetensors.torch import save as save_bytes

    path = Path(path)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in G.state_dict().items()}
    meta = {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION), "config": json.dumps(_plain(G.init_kwargs)),
            "source": source}
    meta.update({k: str(v) for k, v in (extra_metadata or {}).items()})
    data = save_bytes(tensors, metadata=meta)
    atomic_write(path, lambda f: f.write(data))
    return path


# --------------------------------------------------------------------------------------- building


# Bounds on a stored config, checked before the network is allocated: NVIDIA's largest StyleGAN2/3 use
# 1024 px, 512 channels, 512-d latents and 8 mapping layers; a forged config must not allocate terabytes.
CONFIG_BOUNDS = {"z_dim": (0, 4096), "w_dim": (1, 4096), "c_dim": (0, 100_000), "img_resolution": (4, 4096),
                 "img_channels": (1, 4), "mapping_kwargs.num_layers": (0, 64), "synthesis_kwargs.channel_max": (1, 1024),
                 "synthesis_kwargs.channel_base": (1, 1 << 17)}


def _check_config(config: dict) -> None:
    for key, (lo, hi) in CONFIG_BOUNDS.items():
        value = config
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise CheckpointError(f"the stored config's {key} = {value!r} is outside what any StyleGAN2 uses "
                                  f"({lo}..{hi}); the file is damaged or forged, and nothing was allocated")


def _build(config: dict) -> Generator:
    _check_config(config)
    try:
        return Generator(**config)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"cannot build a generator from the stored config ({e})") from None


def build_generator(config: dict, tensors: dict[str, torch.Tensor], where: str = "checkpoint") -> Generator:
    """Build the network from `config` and copy `tensors` in, requiring exact names and shapes."""
    G = _build(config)
    expected = G.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    problems = []
    for k in missing[:3]:
        problems.append(f"missing tensor '{k}' (expected shape {list(expected[k].shape)})")
    for k in unexpected[:3]:
        problems.append(f"unexpected tensor '{k}' with shape {list(tensors[k].shape)}")
    for k, v in expected.items():
        if k in tensors and tuple(tensors[k].shape) != tuple(v.shape):
            problems.append(f"tensor '{k}': expected shape {list(v.shape)}, found {list(tensors[k].shape)}")
            if len(problems) >= 6:
                break
    if problems:
        more = len(missing) + len(unexpected) - min(3, len(missing)) - min(3, len(unexpected))
        tail = f" (and {more} more)" if more > 0 else ""
        raise CheckpointError(f"{where} does not match its StyleGAN2 config: " + "; ".join(problems) + tail)
    with torch.no_grad():
        for k, v in expected.items():
            t = tensors[k]
            if not torch.is_floating_point(t):
                raise CheckpointError(f"{where}: tensor '{k}' has dtype {t.dtype}, expected a floating point tensor")
            v.copy_(t.to(v.dtype))
    _require_finite(G, where)
    return G.eval().requires_grad_(False)


def _require_finite(G, where: str) -> None:
    """NaN or inf weights would give black images (and NaN latents) without any error: refuse them at load."""
    bad = [(k, int((~torch.isfinite(t)).sum())) for k, t in G.state_dict().items()
           if torch.is_floating_point(t) and not bool(torch.isfinite(t).all())]
    if bad:
        names = ", ".join(f"'{k}' ({n} values)" for k, n in bad[:3])
        names += f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise CheckpointError(f"{where}: tensor(s) {names} hold NaN or inf; the file is damaged or comes from a "
                              "diverged training run; use another snapshot of the network")


def resolve_device(device: Union[str, torch.device, None]) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SynthfaceError("--device cuda was requested but no CUDA device is available; use --device cpu or auto")
    return device


def resolve_network(path: PathLike) -> PathLike:
    """'world' -> the demo world's generator file; anything else is a path."""
    if str(path) == "world":
        from ..assets import generator_path
        return generator_path()
    return path


def base_network(path: PathLike) -> str:
    """The network a generator file stands for: 'world' for the demo world's generator and for a generator tuned
    from it (latent.anchors.save_tuned_generator records the network it was tuned from), else the path itself.
    Only a synthface .safetensors file's metadata is read, so this is cheap and never unpickles anything."""
    from safetensors import SafetensorError, safe_open
    if str(path) == "world":
        return "world"
    try:
        if detect_format(path) != "safetensors":
            return str(path)
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, CheckpointError):  # load_generator reports an unreadable file
        return str(path)
    parent = meta.get("tuned_from_network", "") if meta.get("format") == FORMAT_NAME else ""
    return base_network(parent) if parent and parent != str(path) else str(path)


def load_generator(path: PathLike, device: Union[str, torch.device, None] = "cpu", return_info: bool = False,
                   precision: str = "fp32"):
    """Load a StyleGAN2 generator from any supported file, auto-detecting the format.

    `path` "world" names the demo world's shipped generator. Returns the network in eval mode
    without gradients (and the CheckpointInfo if asked). `precision` "bf16" runs synthesis in
    bfloat16 on CPU (Generator.set_cpu_precision).
    """
    if precision not in CPU_PRECISIONS:
        raise SynthfaceError(f"precision must be one of {', '.join(CPU_PRECISIONS)}, got {precision!r}")
    path = resolve_network(path)
    config, tensors, info = read_checkpoint(path)
    G = build_generator(config, tensors, where=str(path)).to(resolve_device(device)).set_cpu_precision(precision)
    # a generator tuned from another (latent.anchors.tune_generator) keeps its mapping network, so a latent model
    # fitted on the original's W still applies to it (latent.sampling.check_generator)
    G.tuned_from = info.metadata.get("tuned_from", "")
    return (G, info) if return_info else G


def describe(path: PathLike) -> dict:
    """Summary used by `synthface info`."""
    path = resolve_network(path)
    config, tensors, info = read_checkpoint(path)
    G = build_generator(config, tensors, where=str(path))
    syn = config.get("synthesis_kwargs", {})
    return {
        "path": str(path),
        "format": info.format,
        "source": info.source,
        "architecture": syn.get("architecture", "skip"),
        "resolution": config["img_resolution"],
        "img_channels": config["img_channels"],
        "z_dim": config["z_dim"],
        "w_dim": config["w_dim"],
        "c_dim": config["c_dim"],
        "num_ws": G.num_ws,
        "mapping_layers": config.get("mapping_kwargs", {}).get("num_layers", 8),
        "channel_base": syn.get("channel_base", 32768),
        "channel_max": syn.get("channel_max", 512),
        "num_fp16_res": syn.get("num_fp16_res", 0),
        "conv_clamp": syn.get("conv_clamp"),
        "parameters": sum(p.numel() for p in G.parameters()),
        "sha256": file_sha256(path),
        **({"tuned_from": info.metadata["tuned_from"]} if info.metadata.get("tuned_from") else {}),
    }
