"""The ``hpcmix`` command line: one subcommand per stage, each usable on its own."""

from __future__ import annotations

import click

from .. import __version__
from .generate import generate
from .run import run

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="hpcmix")
def cli() -> None:
    """hpcmix: signal-mixture toy studies, from Pythia events to tables of sigma_alpha.

    Develop on a local Dask cluster (the default), run the same study on SLURM.
    """


cli.add_command(generate)
cli.add_command(run)


def _register_optional() -> None:
    """Stage commands whose modules are importable (all of them in a full install)."""
    import importlib

    for module, name in (("train", "train"), ("templates", "templates"), ("toys", "toys"), ("report", "report")):
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ImportError:  # pragma: no cover - a stage under construction
            continue
        cli.add_command(getattr(mod, name))


_register_optional()
