import pytest
import torch

from synthface.generator import Generator


def make_generator(architecture="skip", c_dim=0, resolution=16, seed=0, conv_clamp=256, num_fp16_res=0,
                   use_noise=True):
    """A small StyleGAN2 with non-trivial noise strengths, biases and w_avg."""
    torch.manual_seed(seed)
    syn = dict(channel_base=256, channel_max=32, architecture=architecture, conv_clamp=conv_clamp,
               num_fp16_res=num_fp16_res)
    if not use_noise:
        syn["use_noise"] = False
    G = Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=resolution, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=syn)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        G.mapping.w_avg.normal_()
    return G.eval().requires_grad_(False)


@pytest.fixture
def small_generator():
    return make_generator()


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def demo_latent_model(tmp_path_factory):
    """The latent model fitted on a 3000-latent bank of the demo world's generator (saved to disk)."""
    import warnings

    from synthface.generator import load_generator
    from synthface.labelling import load_labeller
    from synthface.latent import DemographicLatentModel, build_bank
    from synthface.world.assets import generator_path

    G = load_generator(generator_path())
    d = tmp_path_factory.mktemp("latent")
    bank = build_bank(G, load_labeller("world"), d / "bank", 3000, progress=False, log=lambda s: None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = DemographicLatentModel(confidence=0.95).fit_bank(bank)
    model.save(d / "model.synthface")
    return model, bank, d / "model.synthface"
