"""``hpcmix train STORE``: train the H-vs-A classifier (or, with ``--loss``, a likelihood-ratio network) on an
existing event store (in this process)."""

from __future__ import annotations

import dataclasses
import json
import os
import time

import click

from .options import SMEARING_CHOICES, open_store, replace_done_folder, site_option, store_samples

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


def parse_settings(pairs) -> list[str]:
    """``('max_epochs=5', 'hidden_layers=64,64')`` -> ``--set`` pairs of the study's ``classifier`` section.

    Bare keys are classifier settings; dotted keys (``templates.space=...``) pass through.
    Values are typed like the ClassifierSettings field and checked when the study is resolved.
    """
    fields = _setting_fields()
    out = []
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r}: write KEY=VALUE, e.g. max_epochs=5", param_hint="--set")
        key, text = (s.strip() for s in pair.split("=", 1))
        if "." in key:
            out.append(f"{key}={text}")
            continue
        if key not in fields:
            raise click.BadParameter(f"unknown classifier setting {key!r}; valid keys: {', '.join(fields)}",
                                     param_hint="--set")
        if key == "seed":
            raise click.BadParameter("give the seed with --seed, not --set seed=...", param_hint="--set")
        kind = fields[key]
        try:
            value = _parse_value(key, kind, text)
        except ValueError:
            hint = next((h for k, h in _HINT.items() if kind.startswith(k)), kind)
            raise click.BadParameter(f"{key}={text!r}: {key} takes {hint}", param_hint="--set") from None
        out.append(f"classifier.{key}={json.dumps(list(value) if isinstance(value, tuple) else value)}")
    return out


def parse_features(text: str | None) -> tuple[str, ...] | None:
    """``reference25`` (a named set) or ``name,name,...``; None: the study's network inputs."""
    from ..physics.features import NETWORK_INPUT_SETS, network_inputs

    if text is None:
        return None
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
                   "Keys: the fields of hpcmix.train.settings.ClassifierSettings, or dotted study keys (templates.space=...).")
@click.option("--loss", type=click.Choice(["exponential", "kl", "cross_entropy", "square"]), default=None,
              help="Train a likelihood-ratio network with this loss instead (its output u ~ omega(p_A / p_H), "
                   "for 'hpcmix templates --method ratio|ratio_calibrated'; no output batch norm).")
@click.option("--overwrite", is_flag=True, help="Replace a finished model in --out.")
@site_option
def train(store, smearing, features, out, samples, seed, sets, loss, overwrite, site):
    """Train the H-vs-A classifier on STORE's train split; the ROC AUC is measured on its test split.

    Runs in this process (on its GPU if TensorFlow sees one), or with --site on that site's
    GPU pool (else its CPU pool), as 'hpcmix run' does. Writes classifier.keras,
    standardiser.json, history.json, metrics.json and done.json into --out, which
    'hpcmix templates --method nn --model DIR' reads. A rerun with the same settings is a no-op.
    """
    from ..orchestrate.checks import training_split_problems
    from ..orchestrate.executor import InProcess, site_executor
    from ..orchestrate.pipeline import run_train
    from ..orchestrate.stages import train as train_stage
    from ..schema import ConfigError
    from ..study import resolve_study

    pairs = parse_settings(sets)
    names = parse_features(features)
    ev = open_store(store, splits=("train", "test"))
    pair = store_samples(ev, samples)
    over = {"components": list(pair), "poi": {"fraction_of": pair[1], "among": list(pair)}}
    if names is not None:
        over["features"] = {"network_inputs": list(names)}
    if seed is not None:
        over["seed"] = seed
    if loss is not None:
        over["ratio"] = {"loss": loss}
        if any(p.startswith("classifier.output_batch_norm=") for p in pairs):
            raise click.BadParameter("output_batch_norm is not used by a ratio network (--loss): its output u is a "
                                     "free real number; leave it out", param_hint="--set")
    try:
        study = resolve_study(overrides=over, sets=pairs)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--set") from None
    names = study.network_inputs
    missing = [n for n in names if n not in ev.layout.feature_names]
    if missing:
        raise click.BadParameter(f"feature(s) {missing} are not in the store", param_hint="--features")
    out = out or os.path.join(os.path.dirname(os.path.abspath(store)), "models", smearing)
    # a ratio network: the study's ratio settings (the classifier's, --set included, without output batch norm)
    m = train_stage.model(study, label=smearing, smearing=smearing, inputs=names,
                          settings=study.classifier if loss is None else study.ratio.classifier,
                          events=ev.layout.fingerprint(), folder=out, loss=loss)
    start, stop = ev.layout.split_ranges()["train"]
    problems, notes = training_split_problems(m, stop - start, field="--set {}")
    if problems:
        raise click.UsageError("the store's train split cannot train this classifier:\n  - " + "\n  - ".join(problems))
    for note in notes:
        click.echo(f"note: {note}")
    what = "classifier" if loss is None else f"likelihood-ratio network ({loss} loss)"
    if replace_done_folder(out, m.address, overwrite, f"a finished {what}", "hpcmix train"):
        click.echo(f"{out} already holds this {what} (address {m.address}); nothing to do")
    else:
        click.echo(f"training a {what} on {store} ({pair[0]} vs {pair[1]}, smearing {smearing}, {len(names)} "
                   f"inputs, seed {m.settings.seed}) -> {out}")
    t0 = time.perf_counter()
    executor = InProcess() if site is None else site_executor(site)
    try:
        rec = run_train([m], ev.path, executor, progress=True, echo=click.echo)[smearing]
    finally:
        executor.close()
    info = rec["info"]
    click.echo(f"ROC AUC {info['roc_auc']:.4f} on {info['n_test']} {info['roc_auc_sample']} events "
               f"({info['n_train']} train, {info['n_val']} validation)")
    click.echo(f"device {info['device']}; {info['epochs_run']} epochs (best {info['best_epoch']}), "
               f"{info['train_seconds']:.1f} s training, {time.perf_counter() - t0:.1f} s in all")
    if loss is not None:
        c = info["closure"][pair[1]]
        click.echo(f"closure on held-out events: mean r on {pair[0]} {c['mean_r_on_reference']:.3f} +- "
                   f"{c['mean_r_on_reference_err']:.3f}, mean 1/r on {pair[1]} {c['mean_inverse_r_on_component']:.3f}"
                   f" +- {c['mean_inverse_r_on_component_err']:.3f} (both 1 for a true ratio)")
    extra = "ratio.json, " if loss is not None else ""
    click.echo(f"model: {out} (classifier.keras, standardiser.json, {extra}history.json, metrics.json, done.json)")
    click.echo(f"next : hpcmix templates {store} --method {'nn' if loss is None else 'ratio'} --model {out}")
