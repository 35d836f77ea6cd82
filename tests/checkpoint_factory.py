"""Write network files in the layouts NVIDIA's code produces, without NVIDIA's code.

* NVIDIA pickles: every module becomes an object whose __reduce__ calls the global
  `torch_utils.persistence._reconstruct_persistent_obj(meta)` with meta = {type, version,
  module_src, class_name, state=<the module's __dict__>}; kwargs are `dnnlib.util.EasyDict`s.
  ada nests mapping_kwargs / synthesis_kwargs; the stylegan3 repo passes synthesis kwargs flat.
* TensorFlow pickles: a (G, D, Gs) tuple of `dnnlib.tflib.network.Network` objects whose
  state holds static_kwargs, components and TF-layout variables (written from our tensors
  with the documented inverse rules: transposes, spatial flips, mod_bias - 1, noise indices).

The fake modules exist in sys.modules only while pickling, so a loader that tried to import
them afterwards would fail.
"""

from __future__ import annotations

import collections
import contextlib
import io
import math
import pickle
import sys
import types

import numpy as np
import torch

_FAKE = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util", "dnnlib.tflib", "dnnlib.tflib.network")


def _reconstruct_persistent_obj(meta):  # never called: loading must not use it
    raise AssertionError("the fake reconstruct function must never be called")


class EasyDict(dict):
    pass


class Network:
    pass


_reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
EasyDict.__module__ = "dnnlib.util"
Network.__module__ = "dnnlib.tflib.network"


@contextlib.contextmanager
def fake_nvidia_modules():
    saved = {name: sys.modules.get(name) for name in _FAKE}
    mods = {name: types.ModuleType(name) for name in _FAKE}
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    mods["dnnlib.util"].EasyDict = EasyDict
    mods["dnnlib.tflib.network"].Network = Network
    sys.modules.update(mods)
    try:
        yield
    finally:
        for name, old in saved.items():
            if old is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old


class _Persistent:
    def __init__(self, class_name, state):
        self.class_name, self.state = class_name, state

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src="class %s: ...  # source text, never executed\n" % self.class_name,
                    class_name=self.class_name, state=self.state)
        return _reconstruct_persistent_obj, (meta,)


def _wrap(module: torch.nn.Module, init_kwargs=None):
    state = dict(module.__dict__)
    state["_modules"] = collections.OrderedDict((k, _wrap(v)) for k, v in module._modules.items())
    state["_parameters"] = collections.OrderedDict(
        (k, torch.nn.Parameter(v.detach().clone(), requires_grad=False)) for k, v in module._parameters.items())
    state["_buffers"] = collections.OrderedDict((k, v.detach().clone()) for k, v in module._buffers.items())
    for key in ("weight_gain", "bias_gain", "act_gain"):  # NVIDIA stores these as numpy float64
        if key in state:
            state[key] = np.float64(state[key])
    state.pop("init_kwargs", None)
    state["_init_args"] = ()
    state["_init_kwargs"] = init_kwargs if init_kwargs is not None else EasyDict()
    return _Persistent(type(module).__name__, state)


def nvidia_kwargs(G, flat: bool = False) -> EasyDict:
    kw = G.init_kwargs
    out = EasyDict(z_dim=kw["z_dim"], c_dim=kw["c_dim"], w_dim=kw["w_dim"], img_resolution=kw["img_resolution"],
                   img_channels=kw["img_channels"], mapping_kwargs=EasyDict(kw["mapping_kwargs"]))
    if flat:
        out.update(kw["synthesis_kwargs"])
        out["fused_modconv_default"] = "inference_only"
    else:
        out["synthesis_kwargs"] = EasyDict(kw["synthesis_kwargs"])
    return out


def nvidia_pickle_bytes(G, protocol: int = 4, flat: bool = False, extra: dict | None = None) -> bytes:
    with fake_nvidia_modules():
        wrapped = _wrap(G, nvidia_kwargs(G, flat))
        data = dict(G=_wrap(G, nvidia_kwargs(G, flat)), D=None, G_ema=wrapped, augment_pipe=None,
                    training_set_kwargs=dict(path="~/datasets/ffhq.zip", use_labels=False, max_size=70000))
        data.update(extra or {})
        buf = io.BytesIO()
        pickle.dump(data, buf, protocol=protocol)
    return buf.getvalue()


def raw_pickle_bytes(obj, protocol: int = 4) -> bytes:
    with fake_nvidia_modules():
        return pickle.dumps(obj, protocol=protocol)


def persistent(class_name, state):
    return _Persistent(class_name, state)


# ------------------------------------------------------------------------------- TensorFlow


def _net(name, static_kwargs=None, components=None, variables=None):
    n = Network()
    n.__dict__.update(version=4, name=name, static_kwargs=static_kwargs or {}, components=components or {},
                      build_module_src="def G_main(): ...  # never executed\n", build_func_name="G_main",
                      variables=variables or [])
    return n


def tf_variables(G):
    """Our state dict -> (G-level, mapping, synthesis) TF variable lists."""
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in G.state_dict().items()}
    arch = G.init_kwargs["synthesis_kwargs"].get("architecture", "skip")
    R = G.img_resolution
    top = [("dlatent_avg", sd["mapping.w_avg"]), ("lod", np.float32(0))]
    mapping = []
    for k, v in sd.items():
        if k.startswith("mapping.fc"):
            i, leaf = k.split(".")[1][2:], k.split(".")[2]
            mapping.append((f"Dense{i}/{leaf}", v.T if leaf == "weight" else v))
        elif k.startswith("mapping.embed."):
            leaf = k.split(".")[2]
            mapping.append((f"LabelEmbed/{leaf}", v.T if leaf == "weight" else v))
    synthesis = []
    for k, v in sd.items():
        if not k.startswith("synthesis.") or k.endswith("resample_filter"):
            continue
        parts = k.split(".")
        r = int(parts[1][1:])
        if parts[2] == "const":
            synthesis.append(("4x4/Const/const", v[None]))
            continue
        layer, leaf = parts[2], ".".join(parts[3:])
        tf_layer = {"conv0": "Conv0_up", "conv1": "Conv" if r == 4 else "Conv1", "torgb": "ToRGB", "skip": "Skip"}[layer]
        scope = f"{r}x{r}/{tf_layer}"
        if layer == "torgb" and arch == "orig":
            scope = f"ToRGB_lod{int(math.log2(R // r))}"
        if leaf == "weight":
            t = v.transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]
            if layer in ("conv0", "skip"):
                t = t[::-1, ::-1]
            synthesis.append((f"{scope}/weight", np.ascontiguousarray(t)))
        elif leaf == "affine.weight":
            synthesis.append((f"{scope}/mod_weight", v.T))
        elif leaf == "affine.bias":
            synthesis.append((f"{scope}/mod_bias", v - 1))
        elif leaf == "noise_const":
            idx = 2 * int(math.log2(r)) - (5 if layer == "conv0" else 4)
            synthesis.append((f"noise{idx}", v[None, None]))
        else:
            synthesis.append((f"{scope}/{leaf}", v))
    return top, mapping, synthesis


def tf_pickle_bytes(G, protocol: int = 3, extra_kwargs: dict | None = None) -> bytes:
    kw = G.init_kwargs
    syn, mp = kw["synthesis_kwargs"], kw["mapping_kwargs"]
    static = dict(latent_size=kw["z_dim"], label_size=kw["c_dim"], dlatent_size=kw["w_dim"],
                  resolution=kw["img_resolution"], num_channels=kw["img_channels"],
                  mapping_layers=mp.get("num_layers", 8), fmap_base=syn["channel_base"] // 2,
                  fmap_max=syn.get("channel_max", 512), architecture=syn.get("architecture", "skip"),
                  truncation_psi=0.5, style_mixing_prob=0.9)
    if syn.get("conv_clamp") is not None:
        static["conv_clamp"] = syn["conv_clamp"]
    static.update(extra_kwargs or {})
    top, mapping, synthesis = tf_variables(G)
    with fake_nvidia_modules():
        Gs = _net("G", static, dict(mapping=_net("G_mapping", variables=mapping),
                                   synthesis=_net("G_synthesis", variables=synthesis)), top)
        D = _net("D", {"resolution": kw["img_resolution"]}, {}, [("4x4/Dense0/weight", np.zeros((4, 4), np.float32))])
        return pickle.dumps((Gs, D, Gs), protocol=protocol)
