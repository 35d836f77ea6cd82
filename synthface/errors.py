"""Exceptions that carry one clear, user-facing message."""


class SynthfaceError(Exception):
    """Base class for errors whose message is meant for the user (the CLI prints it alone)."""


class CheckpointError(SynthfaceError):
    """A network file is missing, unreadable, unsafe, or not a supported StyleGAN2 generator."""
