"""`synthface experiment NAME --out DIR [--quick]`: one command per experiment registered in
synthface.experiments.EXPERIMENTS."""

from __future__ import annotations

import json
import math
import sys

import click

from ..errors import SynthfaceError
from ..experiments import EXPERIMENTS


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
        from ..experiments import get, parse_overrides

        try:
            run = get(name)
            settings = parse_overrides(overrides)
            check_overrides(sys.modules[run.__module__], quick, settings)
            res = run(out, quick=quick, overrides=settings, log=lambda m: click.echo(m, err=True))
        except SynthfaceError as e:
            raise click.ClickException(str(e)) from None
        click.echo(json.dumps(res.get("summary", {"out": out}), indent=2))

    return cmd


def _kind(value) -> str:
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a finite number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, (list, tuple)):
        return "a JSON list"
    return ""


def _fits(default, value) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(default, (list, tuple)):
        return isinstance(value, list) and (not default or all(_fits(default[0], v) for v in value))
    return isinstance(value, type(default))


def check_overrides(module, quick: bool, settings: dict) -> None:
    """--set values checked before the experiment starts (and so before its folder exists): each must have
    the type of the setting's default (a whole number for epochs, finite numbers, lists of the right kind),
    then the experiment's own checks run on the resulting configuration."""
    make_config = getattr(module, "make_config", None)
    if make_config is None:
        return
    defaults = vars(make_config(quick, None))
    for key, value in settings.items():
        if key in defaults and not _fits(defaults[key], value):
            raise click.BadParameter(f"{key}={json.dumps(value)}: {key} takes {_kind(defaults[key]) or 'another type'}"
                                     f" (default {json.dumps(defaults[key], default=str)})", param_hint="--set")
    make_config(quick, settings)


for _name, (_module, _description) in EXPERIMENTS.items():
    experiment.add_command(_command(_name, _description))
