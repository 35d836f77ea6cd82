"""The `synthface` command: the root group, and the one list of every command and where it lives."""

from __future__ import annotations

import click

from . import capacity, evaluate, experiment, generator, methods, ops, pipeline, san, train, world
from .errors import SynthfaceGroup, check_environment


@click.group(cls=SynthfaceGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="synthface")
def main():
    """synthface: demographically balanced synthetic faces from a pretrained StyleGAN2."""
    check_environment()


for _command in (generator.images, generator.convert, generator.info,
                 pipeline.label, pipeline.fit, pipeline.sample, pipeline.anchors, pipeline.generate, pipeline.merge_cmd,
                 capacity.capacity, evaluate.evaluate, evaluate.evaluate_attribute, methods.leakage_cmd,
                 san.perturb, san.privacy, train.train, experiment.experiment, world.world, world.demo, ops.ops):
    main.add_command(_command)
# the method trainers join the training commands: `synthface train sensitivenets`, `synthface train san`
train.train.add_command(methods.sensitivenets_cmd)
train.train.add_command(san.train_san)
