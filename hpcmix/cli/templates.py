"""``hpcmix templates STORE --method phi_star|nn|ratio|ratio_calibrated``: p_H, p_A (or their ratio) and the
test-pool densities for the toy fits."""

from __future__ import annotations

import os

import click

from .options import SMEARING_CHOICES, open_store, replace_done_folder, set_option, site_option, store_samples


def _bandwidth(text: str | None):
    if text is None or text in ("scott", "silverman"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise click.BadParameter(f"{text!r}: give scott, silverman or a number > 0 (estimation-space units)",
                                 param_hint="--bandwidth")
    return value


@click.command("templates")
@click.argument("store", type=click.Path(file_okay=False))
@click.option("--method", type=click.Choice(["phi_star", "nn", "ratio", "ratio_calibrated"]), required=True,
              help="phi_star: the analytic phi* model (a, c fitted on the train split); "
                   "nn: KDEs of the network output on the template split; ratio: a likelihood-ratio network's "
                   "r = omega^-1(u), normalised on the template split; ratio_calibrated: KDEs of r / (1 + r).")
@click.option("--model", type=click.Path(file_okay=False), default=None,
              help="Model folder from 'hpcmix train' (required for nn; for ratio and ratio_calibrated one from "
                   "'hpcmix train --loss ...').")
@click.option("--smearing", type=click.Choice(SMEARING_CHOICES), default=None,
              help="Features without or with detector smearing. [default: the model's smearing, else none]")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Templates folder. [default: <store folder>/templates/<method>-<smearing>]")
@click.option("--samples", default=None, help="alpha = 0 and alpha = 1 samples, e.g. H,A. "
                                               "[default: the model's, else the store's two]")
@click.option("--bandwidth", default=None,
              help="nn: KDE bandwidth, scott, silverman or a number. [default: hpcmix.templates.bandwidth]")
@click.option("--space", type=click.Choice(["logit", "reflect"]), default=None,
              help="nn: how the KDE handles the [0, 1] range. [default: hpcmix.templates.space]")
@click.option("--overwrite", is_flag=True, help="Replace finished templates in --out.")
@set_option
@site_option
def templates(store, method, model, smearing, out, samples, bandwidth, space, overwrite, sets, site):
    """Build the two components' templates of one method and evaluate them on every test-split event.

    The folder (templates.npz, test_pool.npz, done.json) is what 'hpcmix toys' fits. Runs in
    this process, or with --site on that site's CPU pool.
    """
    from ..orchestrate.checks import MIN_KDE_EVENTS
    from ..orchestrate.executor import InProcess, site_executor
    from ..orchestrate.pipeline import run_templates
    from ..orchestrate.record import RecordError, StageRecord
    from ..orchestrate.stages import templates as templates_stage
    from ..schema import ConfigError
    from ..study import resolve_study

    bandwidth = _bandwidth(bandwidth)
    model_info = {}
    ratio = method in ("ratio", "ratio_calibrated")
    if method != "phi_star":
        train_cmd = "hpcmix train STORE --loss exponential --out DIR" if ratio else "hpcmix train STORE --out DIR"
        if model is None:
            raise click.UsageError(f"--method {method} needs --model DIR, a folder written by '{train_cmd}'")
        if not os.path.isdir(model):
            raise click.BadParameter(f"{model!r} does not exist; train a classifier with 'hpcmix train'",
                                     param_hint="--model")
        try:
            model_rec = StageRecord.read(model, stage="train")
        except RecordError as err:
            raise click.BadParameter(f"{err}; train one with 'hpcmix train'", param_hint="--model") from None
        is_ratio = "loss" in model_rec.settings
        if is_ratio != ratio:
            raise click.BadParameter(
                f"{model!r} holds a {'likelihood-ratio network' if is_ratio else 'classifier'}, and --method "
                f"{method} takes a {'likelihood-ratio network' if ratio else 'classifier'}: "
                + ("use --method ratio or ratio_calibrated with it" if is_ratio else
                   f"train one with '{train_cmd}'"), param_hint="--model")
        model_info = {"samples": model_rec.settings["components"], "smearing": model_rec.settings["smearing"],
                      "event_store_fingerprint": model_rec.inputs.get("events"),
                      "store": model_rec.paths.get("events")}
    else:
        unused = [name for name, v in (("--model", model), ("--bandwidth", bandwidth), ("--space", space))
                  if v is not None]
        if unused:
            kde = "the KDE methods (nn, ratio_calibrated)"
            what = {"--model": "the network methods (nn, ratio, ratio_calibrated)", "--bandwidth": kde, "--space": kde}
            raise click.UsageError("; ".join(f"{n} is for {what[n]} only" for n in unused)
                                   + "; leave it out with --method phi_star")
    if method == "ratio" and (bandwidth is not None or space is not None):
        raise click.UsageError("--bandwidth and --space are for the KDE methods (nn, ratio_calibrated); "
                               "--method ratio uses the network's ratio with no KDE")
    ev = open_store(store, splits=("train", "test") if method == "phi_star" else ("train", "template", "test"))
    pair = store_samples(ev, samples if samples is not None or "samples" not in model_info
                         else ",".join(model_info["samples"]))
    smearing = smearing or model_info.get("smearing", "none")
    if model_info.get("smearing") not in (None, smearing):
        click.echo(f"note: the model was trained with smearing {model_info['smearing']}; "
                   f"templates use smearing {smearing}")
    if model_info.get("event_store_fingerprint") not in (None, ev.layout.fingerprint()):
        click.echo(f"note: the model was trained on another event store ({model_info.get('store')})")
    out = out or os.path.join(os.path.dirname(os.path.abspath(store)), "templates", f"{method}-{smearing}")
    over = {"components": list(pair), "poi": {"fraction_of": pair[1], "among": list(pair)},
            "templates": {k: v for k, v in (("bandwidth", bandwidth), ("space", space)) if v is not None}}
    try:
        study = resolve_study(overrides=over, sets=sets)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--set") from None
    item = templates_stage.item(study, estimator=method, smearing=smearing, events=ev.layout.fingerprint(),
                                model_address=model_rec.address if method == "nn" else None,
                                model_folder=model if method == "nn" else None, folder=out,
                                ratio_models=((pair[1], model_rec.address, model),) if ratio else ())
    start, stop = ev.layout.split_ranges()["template"]
    if method in ("nn", "ratio_calibrated") and stop - start < MIN_KDE_EVENTS:
        raise click.UsageError(f"the store's template split has {stop - start} event(s) per sample; KDE templates "
                               f"need at least {MIN_KDE_EVENTS}: generate a store with a larger template split")
    if replace_done_folder(out, item.address, overwrite, "finished templates", "hpcmix templates"):
        click.echo(f"{out} already holds these templates (address {item.address}); nothing to do")
    else:
        click.echo(f"templates {method} (smearing {smearing}) from {store} -> {out}")
    executor = InProcess() if site is None else site_executor(site)
    try:
        info = run_templates([item], ev.path, executor, progress=False)[item.address]["info"]
    finally:
        executor.close()
    sizes = info["pool_sizes"]
    if method == "phi_star":
        click.echo(f"a = {info['a']:.4f} +- {info['a_err']:.4f}, c = {info['c']:.4f}")
    elif method == "ratio":
        click.echo(f"{info['loss']} network: r normalised by {info['normalisation']:.4f} (its mean over the "
                   f"{pair[0]} template events), range [{info['ratio_range'][0]:.3g}, {info['ratio_range'][1]:.3g}]")
    else:
        h_a, h_h = info["bandwidths"]
        click.echo(f"KDE bandwidths ({info['space']} space): A {h_a:.4g}, H {h_h:.4g}")
    if ratio:
        c = info["closure"][pair[1]]
        click.echo(f"closure on the test pool: mean r on {pair[0]} {c['mean_r_on_reference']:.3f} +- "
                   f"{c['mean_r_on_reference_err']:.3f}, mean 1/r on {pair[1]} "
                   f"{c['mean_inverse_r_on_component']:.3f} +- {c['mean_inverse_r_on_component_err']:.3f}")
    lo, hi = info["positivity_limits"]
    click.echo(f"positivity limits of alpha: [{lo:.4g}, {hi:.4g}]; test pool {sizes[pair[0]]} "
               f"{pair[0]} + {sizes[pair[1]]} {pair[1]} events")
    click.echo(f"templates: {out}")
    click.echo(f"next     : hpcmix toys {out} --alpha 0.5,0.7,0.9 --n-events 20,100,500 --n-toys 1000")

