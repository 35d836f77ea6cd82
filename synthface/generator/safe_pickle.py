"""A restricted unpickler for NVIDIA StyleGAN checkpoints that never runs code from the file.

NVIDIA's own loader exec()s the Python source embedded in every network pickle. We
instead resolve each global the pickle names against a short allow-list of data
constructors (tensors, numpy scalars/arrays, ordered dicts, sets) and replace NVIDIA's
reconstruction hooks by inert stubs that only hold the pickled state. Any other global
is refused before it is imported, with an error naming it.
"""

from __future__ import annotations

import codecs
import collections
import copyreg
import io
import pickle
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, SynthfaceError
from ..weights import check_declared_sizes


class UnsafePickleError(CheckpointError):
    """The pickle names a global that is not on the allow-list."""


class EasyDict(dict):
    """Stand-in for dnnlib.EasyDict: a dict with attribute access, for public names only: a pickle's
    state never answers a lookup of a dunder or private name (pickle itself looks up __setstate__,
    __reduce_ex__, ... on the objects it builds)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


class PersistentStub:
    """What NVIDIA's persistent_class objects unpickle into here: the class name and
    the module state, with the embedded module source kept as inert text."""

    def __init__(self, meta: dict):
        if not isinstance(meta, dict):
            raise CheckpointError("malformed persistent object in pickle (its metadata is not a dict)")
        self.type = meta.get("type")
        self.version = meta.get("version")
        self.class_name = meta.get("class_name")
        self.module_src = meta.get("module_src") or ""
        self.state = meta.get("state") or {}

    def __repr__(self) -> str:
        return f"PersistentStub({self.class_name})"

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs") or {})

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    def child(self, name: str):
        return (self.state.get("_modules") or {}).get(name)

    def named_tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers, recursively, under their dotted state-dict names."""
        out: dict[str, torch.Tensor] = {}
        for key in ("_parameters", "_buffers"):
            for name, value in (self.state.get(key) or {}).items():
                if value is not None:
                    out[prefix + name] = value
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentStub):
                out.update(child.named_tensors(prefix + name + "."))
        return out


class TFNetworkStub:
    """Stand-in for dnnlib.tflib.network.Network: pickle's BUILD fills __dict__ with
    version, name, static_kwargs, components, variables, build_module_src..."""

    def __repr__(self) -> str:
        return f"TFNetworkStub({self.__dict__.get('name')})"


def _reconstruct_persistent_obj(meta):
    return PersistentStub(meta)


def _load_storage_from_bytes(b: bytes):
    # Each storage is an embedded torch.save blob; torch's weights_only loader is itself
    # restricted, and map_location avoids "deserialize object on a CUDA device" errors. The sizes it
    # declares are checked against the blob first (the legacy format allocates before it reads).
    try:
        check_declared_sizes(b, "a tensor storage inside this network pickle")
    except SynthfaceError as e:
        raise CheckpointError(str(e)) from None
    try:
        return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UnsafePickleError("refusing a tensor storage inside this pickle that holds Python objects instead of "
                                "plain data (loading it could run code from the file); network pickles written by "
                                "NVIDIA's code hold plain storages") from None


def _no_hooks(hooks, what: str) -> None:
    if hooks:
        raise UnsafePickleError(f"refusing a {what} that carries backward hooks: checkpoints hold data only")


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    _no_hooks(backward_hooks, "tensor")
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, False, collections.OrderedDict())


def _rebuild_parameter(data, requires_grad, backward_hooks):
    _no_hooks(backward_hooks, "parameter")
    return torch.nn.Parameter(data, requires_grad=False)


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    # `state` would set arbitrary attributes on the parameter; we keep only the data.
    return _rebuild_parameter(data, requires_grad, backward_hooks)


def _codecs_encode(obj, encoding="utf-8", errors="strict"):
    # Protocol-2 pickles encode bytes as codecs.encode(str, 'latin1').
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("refusing _codecs.encode with unexpected arguments")
    return codecs.encode(obj, encoding, errors)


_STUB_CLASSES = (EasyDict, TFNetworkStub)


def _copyreg_reconstructor(cls, base, state):
    # Protocol 0/1 object creation; only for our own stub classes.
    if cls not in _STUB_CLASSES or base not in (object, dict):
        raise UnsafePickleError(f"refusing copyreg._reconstructor for {cls!r}")
    return copyreg._reconstructor(cls, base, state)


def _numpy(path: str):
    mod, _, name = path.rpartition(".")
    # numpy 2 renamed numpy.core to numpy._core; old files use either spelling.
    for candidate in (mod, mod.replace("numpy.core", "numpy._core"), mod.replace("numpy._core", "numpy.core")):
        try:
            module = __import__(candidate, fromlist=[name])
            return getattr(module, name)
        except (ImportError, AttributeError):
            continue
    raise UnsafePickleError(f"cannot resolve numpy global {path}")


def _torch_dtype(name: str):
    value = getattr(torch, name, None)
    return value if isinstance(value, torch.dtype) else None


ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("dnnlib.tflib.network", "Network"): TFNetworkStub,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _copyreg_reconstructor,
    ("copy_reg", "_reconstructor"): _copyreg_reconstructor,
}
_NUMPY_ALLOWED = {
    ("numpy", "dtype"),
    ("numpy", "ndarray"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}
_BUILTIN_OBJECTS = {("builtins", "object"): object, ("__builtin__", "object"): object,
                    ("builtins", "dict"): dict, ("__builtin__", "dict"): dict}


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose find_class only returns allow-listed, side-effect-free callables."""

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key in ALLOWED:
            return ALLOWED[key]
        if key in _NUMPY_ALLOWED:
            return _numpy(f"{module}.{name}")
        if key in _BUILTIN_OBJECTS:
            # Only meaningful as the `base` argument of copyreg._reconstructor.
            return _BUILTIN_OBJECTS[key]
        if module == "torch" and _torch_dtype(name) is not None:
            return _torch_dtype(name)
        if module == "numpy" and name in ("float32", "float64", "int64", "int32", "bool_", "uint8", "float16"):
            return getattr(np, name)
        raise UnsafePickleError(
            f"refusing to load this pickle: it references the global '{module}.{name}', which is not on "
            f"synthface's allow-list of plain data types (loading it could run code from the file). "
            f"Only StyleGAN2 network pickles written by NVIDIA's stylegan2-ada-pytorch / stylegan3 code "
            f"or the old TensorFlow release are accepted; convert other models to .safetensors first."
        )

    def persistent_load(self, pid):
        raise UnsafePickleError("refusing a pickle that uses persistent ids (torch.save archives are not network pickles)")


def restricted_load(fileobj) -> Any:
    return RestrictedUnpickler(fileobj).load()
