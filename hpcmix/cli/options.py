"""Parsing helpers shared by CLI commands."""

from __future__ import annotations

import math

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


# -- shared by the stage commands (train, templates, toys) -------------------------------------
SMEARING_CHOICES = ("none", "detector")


def open_store(path: str, *, splits=("train", "template", "test")):
    """The finished event store at ``path``, or a click error that says what to do."""
    import os

    from ..store import EventStore

    if not os.path.exists(path):
        raise click.BadParameter(f"{path!r} does not exist; create an event store with 'hpcmix generate -o {path}'",
                                 param_hint="STORE")
    try:
        store = EventStore(path)
    except (FileNotFoundError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="STORE") from None
    ranges = store.layout.split_ranges()
    missing = [s for s in splits if s not in ranges]
    if missing:
        raise click.BadParameter(f"{path!r} has no split(s) {missing} (it has {list(ranges)}); generate a store "
                                 "with train, template and test splits", param_hint="STORE")
    unfinished = {s: int((~store.done_chunks(s)).sum()) for s in store.layout.samples}
    if any(unfinished.values()):
        todo = ", ".join(f"{s}: {n} of {store.layout.n_chunks} chunks" for s, n in unfinished.items() if n)
        raise click.BadParameter(f"the event store {path!r} is not complete ({todo} unfinished); run "
                                 "'hpcmix generate' again with the settings it was made with to finish it",
                                 param_hint="STORE")
    return store


def store_samples(store, text: str | None) -> tuple[str, str]:
    """``--samples H,A`` (alpha = 0 component, alpha = 1 component); default: the store's two samples."""
    have = list(store.layout.samples)
    if text is None:
        if len(have) != 2:
            raise click.BadParameter(f"the store has {len(have)} samples {have}; choose two with --samples H,A",
                                     param_hint="--samples")
        return tuple(have)
    names = [s.strip() for s in text.split(",") if s.strip()]
    if len(names) != 2 or names[0] == names[1]:
        raise click.BadParameter(f"{text!r}: give two distinct samples, alpha = 0 component first, e.g. H,A",
                                 param_hint="--samples")
    unknown = [s for s in names if s not in have]
    if unknown:
        raise click.BadParameter(f"sample(s) {unknown} are not in the store; it has {have}", param_hint="--samples")
    return tuple(names)


def parse_number_list(text: str, kind: type, option: str, *, minimum=None, maximum=None, what: str = "") -> list:
    """'0.5,0.7,0.9' -> [0.5, 0.7, 0.9]: non-empty, distinct, each within [minimum, maximum]."""
    try:
        values = [kind(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        values = None
    if not values:
        raise click.BadParameter(f"{text!r}: give comma-separated {kind.__name__}s, e.g. {what}", param_hint=option)
    if len(set(values)) != len(values):
        raise click.BadParameter(f"{text!r}: the values must be distinct", param_hint=option)
    bad = [v for v in values if (minimum is not None and v < minimum) or (maximum is not None and v > maximum)]
    if bad or any(kind is float and math.isnan(v) for v in values):
        lo = "-inf" if minimum is None else minimum
        hi = "inf" if maximum is None else maximum
        raise click.BadParameter(f"{text!r}: value(s) {bad} outside [{lo}, {hi}]", param_hint=option)
    return values


def replace_done_folder(folder: str, address: str, overwrite: bool, what: str, command: str) -> bool:
    """True when ``folder`` already holds this very output (same address: nothing to do).

    A finished output of another address is refused unless ``overwrite``, which drops its
    done.json first.
    """
    import os

    from ..orchestrate.record import DONE_FILE, RecordError, StageRecord

    if not os.path.exists(os.path.join(folder, DONE_FILE)):
        return False
    try:
        same = StageRecord.read(folder).address == address
    except RecordError:
        same = False
    if same and not overwrite:
        return True
    if not overwrite:
        raise click.UsageError(f"{folder} already holds {what} made with other settings (done.json); pass "
                               f"--overwrite to replace it or choose another --out for '{command}'")
    os.remove(os.path.join(folder, DONE_FILE))
    return False


def site_option(f):
    """``--site``: where the stage's tasks run (default: this machine's local Dask cluster)."""
    return click.option("-s", "--site", default=None,
                        help="Site config: a YAML path, or a site name ($HPCMIX_SITE_PATH, then the packaged "
                             "local, ci-slurm, slurm). [default: local]")(f)


def set_option(f):
    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                        help="Override a study setting (repeatable), e.g. --set classifier.max_epochs=5; "
                             "values are read as YAML.")(f)


def job_options(f):
    """The options of the commands that run a job file (``hpcmix run``, ``hpcmix reweight``):
    ``--site``, ``--set``, ``--dry-run``, ``--progress``."""
    for option in reversed((
            click.option("-s", "--site", default=None,
                         help="Site config: a YAML path, or a site name looked up in $HPCMIX_SITE_PATH, then "
                              "among the packaged sites (local, ci-slurm, slurm). "
                              "[default: $HPCMIX_SITE, else local]"),
            click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                         help="Override a setting of the job (repeatable), e.g. --set toys.n_toys=100 "
                              "--set classifier.max_epochs=5; values are read as YAML."),
            click.option("--dry-run", is_flag=True, help="Validate the job and print the plan; start nothing."),
            click.option("--progress/--no-progress", default=True, show_default=True))):
        f = option(f)
    return f
