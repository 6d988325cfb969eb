"""The ``hpcmix`` command line: one subcommand per stage, each usable on its own."""

from __future__ import annotations

import click

from .. import __version__
from .generate import generate
from .run import run

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class InputError(click.ClickException):
    """One of hpcmix's own errors: its message says what to fix (exit 2, like a usage error)."""

    exit_code = 2


class UnexpectedError(click.ClickException):
    """Any other exception: a short message, where it happened, and the file with the traceback."""

    exit_code = 1

    def __init__(self, err: BaseException):
        from ..errors import TaskFailedError

        where, cause = "", err
        if isinstance(err, TaskFailedError):
            where, cause = f" in {err.where}", err.error
        path = write_traceback(err)
        first = (str(cause).strip().splitlines() or [""])[0]
        super().__init__(f"unexpected {type(cause).__name__}{where}: {first}\n"
                         f"The full traceback is in {path}; please include it when you report this.")


def write_traceback(err: BaseException) -> str:
    """Write ``err``'s traceback (with the worker's, for a task) to a new file; return its path.

    The folder is ``$HPCMIX_TRACEBACK_DIR``, else the system's temporary folder.
    """
    import os
    import tempfile
    import time
    import traceback

    text = "".join(traceback.format_exception(err))
    for folder in (os.environ.get("HPCMIX_TRACEBACK_DIR"), tempfile.gettempdir()):
        if not folder:
            continue
        try:  # an unusable $HPCMIX_TRACEBACK_DIR falls back to the temporary folder
            os.makedirs(folder, exist_ok=True)
            fd, path = tempfile.mkstemp(prefix=f"hpcmix-{time.strftime('%Y%m%d-%H%M%S')}-",
                                        suffix=".traceback.txt", dir=folder)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return path
        except OSError:
            continue
    return "(nowhere: no writable folder for it)"


class HpcmixGroup(click.Group):
    """Turns exceptions into messages: no traceback reaches the terminal."""

    def invoke(self, ctx: click.Context):
        from ..errors import HpcmixError

        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except HpcmixError as err:
            raise InputError(str(err)) from None
        except Exception as err:
            raise UnexpectedError(err) from None


@click.group(cls=HpcmixGroup, context_settings=CONTEXT_SETTINGS)
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

    for module, name in (("reweight", "reweight"), ("train", "train"), ("templates", "templates"), ("toys", "toys"),
                         ("report", "report"), ("status", "status"), ("export", "export")):
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ImportError:  # pragma: no cover - a stage under construction
            continue
        cli.add_command(getattr(mod, name))


_register_optional()
