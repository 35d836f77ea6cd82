"""synthface: demographically balanced synthetic face datasets from a pretrained StyleGAN2."""

__version__ = "0.1.0"

from .errors import CheckpointError, SynthfaceError  # noqa: E402
from .generator import Generator, load_generator, save_generator  # noqa: E402
from .nets import load_backbone  # noqa: E402

__all__ = ["__version__", "Generator", "load_generator", "save_generator", "load_backbone", "CheckpointError",
           "SynthfaceError"]
