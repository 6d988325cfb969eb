"""The study's stages, each behind the same small interface (docs/ARCHITECTURE.md).

A stage module has ``NAME``, ``VERSION`` (its algorithm version, part of every address
it makes), a ``plan(...)`` that turns the resolved study and its inputs' addresses into
items (each with its folder and address), ``tasks(items, ...)`` for the executor, and a
task function that computes one item on a worker and writes its record (done.json) last.
``hpcmix run`` chains them (orchestrate/pipeline.py); each subcommand runs one.
"""

from . import reweight, templates, toys, train

VERSIONS = {m.NAME: m.VERSION for m in (reweight, train, templates, toys)}

__all__ = ["VERSIONS", "reweight", "templates", "toys", "train"]
