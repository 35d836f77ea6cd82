"""StyleGAN2 generator: the network and the loaders for the checkpoint formats users have."""

from .checkpoint import (CheckpointInfo, base_network, build_generator, describe, detect_format, load_generator,
                         read_checkpoint, resolve_device, save_generator)
from .networks import Discriminator, Generator, MappingNetwork, SynthesisNetwork

__all__ = ["Discriminator", "Generator", "MappingNetwork", "SynthesisNetwork", "CheckpointInfo", "load_generator", "save_generator",
           "read_checkpoint", "build_generator", "detect_format", "describe", "resolve_device", "base_network"]
