"""StyleGAN2 operators: bias_act, upfirdn2d, conv2d_resample and modulated_conv2d.

Each op is written in plain PyTorch here (the ground truth, and the CPU path). CUDA kernels for
bias_act and upfirdn2d sit in csrc/ and are built on first CUDA use (see _plugin: SYNTHFACE_OPS,
the build cache and lock, `synthface ops doctor`); they must match these numerically.
"""

from .bias_act import ACTIVATIONS, bias_act, default_gain
from .conv2d_resample import conv2d_resample
from .modconv import modulated_conv2d, modulated_conv2d_bias_act, modulated_torgb
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    "ACTIVATIONS",
    "bias_act",
    "default_gain",
    "conv2d_resample",
    "modulated_conv2d",
    "modulated_conv2d_bias_act",
    "modulated_torgb",
    "setup_filter",
    "upfirdn2d",
    "upsample2d",
    "downsample2d",
    "filter2d",
]
