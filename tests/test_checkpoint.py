"""Loading: every format round-trips bit-exactly; hostile and broken files get one clear error."""

import os
import sys

import numpy as np
import pytest
import torch

from synthface.errors import CheckpointError
from synthface.generator import detect_format, load_generator, save_generator
from synthface.generator.safe_pickle import UnsafePickleError

import checkpoint_factory as cf
from conftest import make_generator


def _outputs(G, c_dim=0):
    z = torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(0))
    c = torch.eye(c_dim)[[0, 1, c_dim - 1]] if c_dim else None
    return G(z, c, truncation_psi=0.7, truncation_cutoff=2, noise_mode="const")


def _assert_same_network(G, H, c_dim=0):
    a, b = G.state_dict(), H.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(_outputs(G, c_dim), _outputs(H, c_dim))


@pytest.mark.parametrize("arch", ["skip", "orig", "resnet"])
@pytest.mark.parametrize("c_dim", [0, 3])
@pytest.mark.parametrize("flat", [False, True], ids=["ada-nested", "sg3-flat"])
def test_nvidia_pickle_round_trip(tmp_path, arch, c_dim, flat):
    G = make_generator(arch, c_dim=c_dim)
    path = tmp_path / "net.pkl"
    path.write_bytes(cf.nvidia_pickle_bytes(G, protocol=4, flat=flat))
    H, info = load_generator(path, return_info=True)
    assert info.format == "nvidia-pickle"
    assert H.init_kwargs["synthesis_kwargs"]["architecture"] == arch
    _assert_same_network(G, H, c_dim)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_nvidia_pickle_protocols(tmp_path, protocol):
    G = make_generator()
    path = tmp_path / "net.pkl"
    path.write_bytes(cf.nvidia_pickle_bytes(G, protocol=protocol))
    _assert_same_network(G, load_generator(path))


def test_loading_never_imports_nvidia_modules(tmp_path):
    path = tmp_path / "net.pkl"
    path.write_bytes(cf.nvidia_pickle_bytes(make_generator()))
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        sys.modules.pop(name, None)
    load_generator(path)
    assert not any(m == "torch_utils" or m.startswith(("torch_utils.", "dnnlib")) or m == "dnnlib"
                   for m in sys.modules)


@pytest.mark.parametrize("arch", ["skip", "orig", "resnet"])
@pytest.mark.parametrize("c_dim", [0, 3])
@pytest.mark.parametrize("protocol", [2, 3])
def test_tensorflow_pickle_conversion(tmp_path, arch, c_dim, protocol):
    G = make_generator(arch, c_dim=c_dim)
    path = tmp_path / "stylegan2-config-f.pkl"
    path.write_bytes(cf.tf_pickle_bytes(G, protocol=protocol))
    H, info = load_generator(path, return_info=True)
    assert info.format == "tf-pickle"
    _assert_same_network(G, H, c_dim)


def test_tensorflow_unknown_kwarg_is_named(tmp_path):
    path = tmp_path / "tf.pkl"
    path.write_bytes(cf.tf_pickle_bytes(make_generator(), extra_kwargs={"mystery_knob": 3}))
    with pytest.raises(CheckpointError, match="mystery_knob"):
        load_generator(path)


@pytest.mark.parametrize("arch", ["skip", "resnet"])
def test_safetensors_round_trip_and_convert(tmp_path, arch):
    G = make_generator(arch, c_dim=2)
    st = save_generator(G, tmp_path / "g.safetensors")
    assert detect_format(st) == "safetensors"
    _assert_same_network(G, load_generator(st), c_dim=2)
    # pickle -> safetensors through the CLI's API path
    pkl = tmp_path / "g.pkl"
    pkl.write_bytes(cf.nvidia_pickle_bytes(G))
    save_generator(load_generator(pkl), tmp_path / "h.safetensors")
    _assert_same_network(G, load_generator(tmp_path / "h.safetensors"), c_dim=2)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


# ------------------------------------------------------------------ hostile pickles


class _Evil:
    def __init__(self, func, arg):
        self.func, self.arg = func, arg

    def __reduce__(self):
        return self.func, (self.arg,)


@pytest.mark.parametrize("func_name", ["os.system", "builtins.exec", "builtins.eval"])
def test_malicious_reduce_is_refused_without_side_effect(tmp_path, func_name):
    marker = tmp_path / "pwned"
    code = f"open({str(marker)!r}, 'w').write('x')"
    if func_name == "os.system":
        payload = _Evil(os.system, f"touch {marker}")
    elif func_name == "builtins.exec":
        payload = _Evil(exec, code)
    else:
        payload = _Evil(eval, code)
    for data in (payload, {"G_ema": payload}, {"G_ema": cf.persistent("Generator", {"_init_kwargs": payload})}):
        path = tmp_path / "evil.pkl"
        path.write_bytes(cf.raw_pickle_bytes(data, protocol=4))
        with pytest.raises(UnsafePickleError) as e:
            load_generator(path)
        assert ("system" in str(e.value)) or ("exec" in str(e.value)) or ("eval" in str(e.value))
        assert "allow-list" in str(e.value)
        assert not marker.exists()


def test_unknown_module_is_never_imported(tmp_path):
    src = b"csynthface_evil1\nrun\n(tR."  # protocol 0: GLOBAL, empty tuple, REDUCE
    path = tmp_path / "evil.pkl"
    path.write_bytes(src)
    with pytest.raises(UnsafePickleError, match="synthface_evil1.run"):
        load_generator(path)
    assert "synthface_evil1" not in sys.modules


# ------------------------------------------------------------------ broken files


def test_missing_empty_directory_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_generator(tmp_path / "nope.pkl")
    with pytest.raises(CheckpointError, match="directory"):
        load_generator(tmp_path)
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_generator(tmp_path / "empty.pkl")
    torch.save({"g": torch.zeros(2)}, tmp_path / "rosinality.pt")
    with pytest.raises(CheckpointError, match="torch.save"):
        load_generator(tmp_path / "rosinality.pt")
    (tmp_path / "junk.bin").write_bytes(np.random.RandomState(0).bytes(1000))
    with pytest.raises(CheckpointError, match="neither a network pickle"):
        load_generator(tmp_path / "junk.bin")


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_pickle(tmp_path, fraction):
    data = cf.nvidia_pickle_bytes(make_generator())
    path = tmp_path / "cut.pkl"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        load_generator(path)


def test_corrupt_pickle_body(tmp_path):
    data = bytearray(cf.nvidia_pickle_bytes(make_generator()))
    data[200:260] = b"\xff" * 60
    path = tmp_path / "bad.pkl"
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_generator(path)


def test_truncated_safetensors(tmp_path):
    st = save_generator(make_generator(), tmp_path / "g.safetensors")
    data = st.read_bytes()
    st.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_generator(st)


def test_pickle_without_generator(tmp_path):
    path = tmp_path / "d.pkl"
    path.write_bytes(cf.raw_pickle_bytes({"D": None, "augment_pipe": None}))
    with pytest.raises(CheckpointError, match="holds no generator.*augment_pipe, D|holds no generator"):
        load_generator(path)


def test_stylegan3_is_refused_clearly(tmp_path):
    G = make_generator()
    state = {"_parameters": {}, "_buffers": {}, "_init_args": (), "_init_kwargs": cf.nvidia_kwargs(G),
             "_modules": {"synthesis": cf.persistent("SynthesisNetwork", {
                 "_parameters": {}, "_buffers": {}, "_modules": {"input": cf.persistent("SynthesisInput", {
                     "_parameters": {"weight": torch.nn.Parameter(torch.zeros(4, 4))},
                     "_buffers": {"freqs": torch.zeros(4, 2)}, "_modules": {}})}})}}
    path = tmp_path / "sg3.pkl"
    path.write_bytes(cf.raw_pickle_bytes({"G_ema": cf.persistent("Generator", state)}))
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        load_generator(path)


def test_shape_mismatch_names_the_tensor(tmp_path):
    H = make_generator()
    with torch.no_grad():
        H.synthesis.b8.conv1.weight = torch.nn.Parameter(torch.zeros(32, 32, 3, 1))
    path = tmp_path / "bad.pkl"
    path.write_bytes(cf.nvidia_pickle_bytes(H))
    with pytest.raises(CheckpointError) as e:
        load_generator(path)
    msg = str(e.value)
    assert "synthesis.b8.conv1.weight" in msg and "[32, 32, 3, 3]" in msg and "[32, 32, 3, 1]" in msg


def test_missing_tensor_is_named(tmp_path):
    H = make_generator()
    del H.synthesis.b16.conv0._buffers["noise_const"]
    path = tmp_path / "bad.pkl"
    path.write_bytes(cf.nvidia_pickle_bytes(H))
    with pytest.raises(CheckpointError, match=r"missing tensor 'synthesis.b16.conv0.noise_const' \(expected shape \[16, 16\]\)"):
        load_generator(path)


def test_safetensors_without_config_is_explained(tmp_path):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="synthface convert"):
        load_generator(tmp_path / "plain.safetensors")


def test_random_corruption_only_ever_gives_checkpoint_error(tmp_path):
    """Bytes flipped or cut anywhere: the load either succeeds or raises CheckpointError."""
    import random

    G = make_generator()
    sources = [cf.nvidia_pickle_bytes(G), cf.tf_pickle_bytes(G), save_generator(G, tmp_path / "g.safetensors").read_bytes()]
    rng = random.Random(0)
    path = tmp_path / "fuzz.bin"
    for data in sources:
        for _ in range(40):
            b = bytearray(data)
            for _ in range(rng.choice([1, 3, 10])):
                b[rng.randrange(len(b))] = rng.randrange(256)
            if rng.random() < 0.3:
                b = b[:rng.randrange(len(b))]
            path.write_bytes(bytes(b))
            try:
                load_generator(path)
            except CheckpointError:
                pass
