"""Parsing helpers shared by CLI commands."""

from __future__ import annotations

import click
import yaml


def parse_events(text: str, default_splits) -> dict[str, int]:
    """'train=20000,test=5000' -> dict; a bare integer N means N events in each configured split."""
    text = text.strip()
    try:
        if "=" not in text:
            n = int(text)
            return {name: n for name in default_splits}
        out = {}
        for part in text.split(","):
            name, value = part.split("=")
            out[name.strip()] = int(value)
        return out
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give an integer (events per split) or SPLIT=N pairs, e.g. train=20000,template=20000,test=20000"
        ) from None


def load_processes_file(path: str | None) -> dict:
    """The ``processes:`` mapping of a YAML file (a job file or a processes file)."""
    if path is None:
        return {}
    with open(path) as f:
        try:
            data = yaml.safe_load(f) or {}
        except yaml.YAMLError as err:
            raise click.BadParameter(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("processes", {}), dict):
        raise click.BadParameter(f"{path}: expected a mapping with a 'processes:' mapping inside")
    return data.get("processes", {})
