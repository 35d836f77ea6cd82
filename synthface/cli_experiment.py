"""`synthface experiment NAME --out DIR [--quick]`: one command per experiment registered in
synthface.experiments.EXPERIMENTS."""

from __future__ import annotations

import json

import click

from .errors import SynthfaceError
from .experiments import EXPERIMENTS


@click.group()
def experiment():
    """Run an experiment end to end and write report.md, report.html and results.json."""


def _command(name: str, description: str) -> click.Command:
    @click.command(name, help=description)
    @click.option("--out", required=True, type=click.Path(file_okay=False), help="folder for the report and results")
    @click.option("--quick", is_flag=True, help="a small size that finishes in minutes on a laptop CPU")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="override a setting of the experiment's configuration (repeatable; values as JSON)")
    def cmd(out, quick, overrides):
        from .experiments import get, parse_overrides

        try:
            res = get(name)(out, quick=quick, overrides=parse_overrides(overrides),
                            log=lambda m: click.echo(m, err=True))
        except SynthfaceError as e:
            raise click.ClickException(str(e)) from None
        click.echo(json.dumps(res.get("summary", {"out": out}), indent=2))

    return cmd


for _name, (_module, _description) in EXPERIMENTS.items():
    experiment.add_command(_command(_name, _description))
