"""``hpcmix train STORE``: train the H-vs-A classifier on an existing event store (in this process)."""

from __future__ import annotations

import dataclasses
import os
import time

import click

from .options import SMEARED, SMEARING_CHOICES, open_store, replace_done_folder, store_samples

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


def _setting_fields() -> dict[str, str]:
    """Classifier setting name -> its annotation (a string: the settings module uses postponed annotations)."""
    from ..train.settings import ClassifierSettings

    return {f.name: str(f.type) for f in dataclasses.fields(ClassifierSettings)}


def _parse_value(name: str, kind: str, text: str):
    """One ``--set`` value, typed like the ClassifierSettings field."""
    t = text.strip()
    if kind.startswith("tuple"):
        return tuple(int(p) for p in t.replace(" ", "").split(",") if p)
    if kind == "bool":
        if t.lower() in _TRUE:
            return True
        if t.lower() in _FALSE:
            return False
        raise ValueError("true or false")
    if kind.startswith("int") and "None" in kind:
        return None if t.lower() in ("none", "null") else int(t)
    if kind == "int":
        return int(t)
    if kind == "float":
        return float(t)
    return t


_HINT = {"tuple": "comma-separated integers, e.g. 64,64", "bool": "true or false", "int": "an integer",
         "float": "a number", "str": "a name"}


def parse_settings(pairs) -> dict:
    """``('max_epochs=5', 'hidden_layers=64,64')`` -> typed overrides, validated by ClassifierSettings."""
    from ..train.settings import ClassifierSettings

    fields = _setting_fields()
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r}: write KEY=VALUE, e.g. max_epochs=5", param_hint="--set")
        key, text = (s.strip() for s in pair.split("=", 1))
        if key not in fields:
            raise click.BadParameter(f"unknown classifier setting {key!r}; valid keys: {', '.join(fields)}",
                                     param_hint="--set")
        if key == "seed":
            raise click.BadParameter("give the seed with --seed, not --set seed=...", param_hint="--set")
        kind = fields[key]
        try:
            out[key] = _parse_value(key, kind, text)
        except ValueError:
            hint = next((h for k, h in _HINT.items() if kind.startswith(k)), kind)
            raise click.BadParameter(f"{key}={text!r}: {key} takes {hint}", param_hint="--set") from None
    try:
        ClassifierSettings.from_config(**out)
    except (TypeError, ValueError) as err:
        raise click.BadParameter(str(err), param_hint="--set") from None
    return out


def parse_features(text: str | None) -> tuple[str, ...]:
    """``reference25`` (a named set) or ``name,name,...``; None: the configured network inputs."""
    from ..physics.features import NETWORK_INPUT_SETS, network_inputs

    spec = None
    if text is not None:
        text = text.strip()
        spec = text if text in NETWORK_INPUT_SETS else [s.strip() for s in text.split(",") if s.strip()]
    try:
        return tuple(network_inputs(spec))
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--features") from None


@click.command("train")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--smearing", type=click.Choice(SMEARING_CHOICES), default="none", show_default=True,
              help="Train on features without or with detector smearing.")
@click.option("--features", default=None,
              help="Network inputs: a named set (reference25) or name,name,... "
                   "[default: hpcmix.features.network_inputs]")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Model folder. [default: <store folder>/models/<smearing>]")
@click.option("--samples", default=None, help="alpha = 0 and alpha = 1 samples, e.g. H,A. [default: the store's two]")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Training seed. [default: hpcmix.seed]")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Classifier setting override (repeatable), e.g. --set max_epochs=5 --set hidden_layers=64,64. "
                   "Keys: the fields of hpcmix.train.ClassifierSettings.")
@click.option("--overwrite", is_flag=True, help="Replace a finished model in --out.")
def train(store, smearing, features, out, samples, seed, sets, overwrite):
    """Train the H-vs-A classifier on STORE's train split; the ROC AUC is measured on its test split.

    Runs in this process (on its GPU if TensorFlow sees one). Writes classifier.keras,
    standardiser.json, history.json, metrics.json and done.json into --out, which
    'hpcmix templates --method nn --model DIR' reads.
    """
    from .. import config
    from ..orchestrate import stages

    overrides = parse_settings(sets)
    names = parse_features(features)
    ev = open_store(store, splits=("train", "test"))
    pair = store_samples(ev, samples)
    missing = [n for n in names if n not in ev.layout.feature_names]
    if missing:
        raise click.BadParameter(f"feature(s) {missing} are not in the store", param_hint="--features")
    seed = config.get("seed", seed)
    out = out or os.path.join(os.path.dirname(os.path.abspath(store)), "models", smearing)
    replace_done_folder(out, overwrite, "a finished classifier", "hpcmix train")

    click.echo(f"training on {store} ({pair[0]} vs {pair[1]}, smearing {smearing}, {len(names)} inputs, "
               f"seed {seed}) -> {out}")
    t0 = time.perf_counter()
    try:
        info = stages.train_task(ev.path, pair, SMEARED[smearing], names, overrides, seed, out, progress=True)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    # provenance for 'hpcmix templates' (which smearing, store and samples this model belongs to)
    info = stages.mark_done(out, {**info, "store": os.path.abspath(ev.path),
                                  "event_store_fingerprint": ev.layout.fingerprint(), "samples": list(pair),
                                  "smearing": smearing, "features": list(names), "seed": seed,
                                  "classifier": overrides})
    click.echo(f"ROC AUC {info['roc_auc']:.4f} on {info['n_test']} {info['roc_auc_sample']} events "
               f"({info['n_train']} train, {info['n_val']} validation)")
    click.echo(f"device {info['device']}; {info['epochs_run']} epochs (best {info['best_epoch']}), "
               f"{info['train_seconds']:.1f} s training, {time.perf_counter() - t0:.1f} s in all")
    click.echo(f"model: {out} (classifier.keras, standardiser.json, history.json, metrics.json, done.json)")
    click.echo(f"next : hpcmix templates {store} --method nn --model {out}")
