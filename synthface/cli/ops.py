"""`synthface ops doctor`: the StyleGAN2 CUDA kernels' build and self-test."""

from __future__ import annotations

import sys

import click


@click.group()
def ops():
    """The StyleGAN2 CUDA kernels (stylegan_ops)."""


@ops.command("doctor")
def ops_doctor():
    """Build the CUDA kernels, self-test them against the PyTorch ops and print a diagnosis."""
    from stylegan_ops.doctor import run

    ok = run(log=lambda m: click.echo(m))
    if not ok:
        sys.exit(1)
