"""Toy batches -> the results Dataset: per-toy fits, Cramer-Rao bounds, templates, one example curve.

Shared by ``hpcmix run`` and ``hpcmix toys``; reads only the stage artefacts
(templates.npz, test_pool.npz, batch-*.npz), never a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..study.model import ESTIMATORS as ESTIMATOR_ORDER
SMEARING_ORDER = ("none", "detector")


def aggregate_toys(template_dirs: Mapping[tuple[str, str], str], cells: Sequence, *, alphas, n_events,
                   n_toys: int, seed: int, path: str, attrs: Mapping | None = None,
                   nuisances: Mapping[str, Sequence[float]] | None = None, treatments: Sequence[str] = (),
                   networks: Mapping[int, tuple[Mapping[tuple[str, str], str], Sequence]] | None = None):
    """Collect the toy batches of ``cells`` into the results Dataset, saved at ``path`` (Zarr).

    ``template_dirs``: {(estimator, smearing): templates folder}; ``cells``: toys-stage cells
    whose batch files are all written; ``nuisances`` ({component: fraction grid}) and
    ``treatments`` for studies with more than two components; ``networks`` (templates.weight_networks:
    all): {reweighting network m >= 1: (its template_dirs, its cells)}, whose fits become
    ``alpha_hat_by_network`` beside the nominal (network 0) ``alpha_hat``. Returns (the Dataset
    reopened from ``path``, {(estimator, smearing): templates}).
    """
    from .dataset import open_results, save_results

    kw = dict(alphas=alphas, n_events=n_events, n_toys=n_toys, seed=seed, attrs=attrs, nuisances=nuisances,
              treatments=treatments)
    ds, templates = _build(template_dirs, cells, curves=True, **kw)
    if networks:
        ds = _with_networks(ds, {m: _build(dirs, c, curves=False, **kw)[0] for m, (dirs, c) in networks.items()})
    save_results(ds, path)
    return open_results(path), templates


def _with_networks(ds, by_network: Mapping[int, object]):
    """``alpha_hat_by_network`` (dimension reweight_network, 0 the nominal): the fits of each reweighting
    network's cells: its templates, and (toys.weights) pseudo-data drawn with its weights, same seeds."""
    import xarray as xr

    order = [0, *sorted(by_network)]
    hats = [ds["alpha_hat"], *(by_network[m]["alpha_hat"] for m in order[1:])]
    ds["alpha_hat_by_network"] = xr.concat(hats, dim="reweight_network", join="exact").assign_coords(
        reweight_network=order)
    ds["alpha_hat_by_network"].attrs.update(
        long_name="fitted alpha with the templates and pools of each reweighting network's weights "
                  "(templates.weight_networks: all; network 0 is alpha_hat)", units="1")
    ds["reweight_network"].attrs.update(long_name="reweighting network (its seed is the weight's seed + m)")
    return ds


def _build(template_dirs, cells, *, alphas, n_events, n_toys, seed, attrs, nuisances, treatments, curves: bool):
    """The results Dataset of one set of templates and cells (not saved), and the loaded templates."""
    from ..orchestrate.record import StageRecord
    from ..stats.fitter import mixture_log_likelihood
    from ..stats.toys import draw_toys, toy_seed
    from ..store.artefacts import load_templates, load_test_pool, load_toy_batch
    from .dataset import ResultsBuilder

    estimators = sorted({e for e, _ in template_dirs}, key=ESTIMATOR_ORDER.index)
    smearings = sorted({s for _, s in template_dirs}, key=SMEARING_ORDER.index)
    builder = ResultsBuilder(estimators=estimators, smearings=smearings, alphas=alphas, n_events=n_events,
                             n_toys=n_toys, attrs=dict(attrs or {}), nuisances=nuisances, treatments=treatments)
    templates = {}
    for key, d in template_dirs.items():
        templates[key] = load_templates(d)
        builder.add_templates(*key, templates[key])
    if nuisances:
        _add_fraction_cells(builder, templates, cells)
        ds = builder.to_dataset()
        ds.attrs["fit"] = ("unbinned ML of K fractions, p = sum_k f_k p_k; alpha = f_A / (f_A + f_H) with the "
                           "other fractions fixed, floated or constrained; p >= 0 on the template support")
        return _events_per_toy(ds, cells), templates
    for c in cells:
        t = templates[(c.estimator, c.smearing)]
        bound = float(np.asarray(t.cramer_rao_bound(c.alpha, c.n_events)))
        offset = 0
        for b, n in enumerate(c.batches):
            batch = load_toy_batch(c.batch_file(b))
            builder.add(c.estimator, c.smearing, c.alpha, c.n_events, batch.fit, offset=offset, draw=batch.draw,
                        cramer_rao=bound)
            offset += n
    # Fig. 6: -2 Delta lnL of one test set (the first toy of the middle cell), per estimator and smearing
    alpha_grid = np.linspace(-0.5, 1.5, 401)
    mid_alpha = alphas[len(alphas) // 2]
    mid_n = n_events[len(n_events) // 2]
    for (est, sm), d in (template_dirs.items() if curves else ()):
        pool = load_test_pool(d)
        zero, one = pool.components
        draw = draw_toys(pool.size(one), pool.size(zero), alpha=mid_alpha, n_events=mid_n, n_toys=1,
                         rng=toy_seed(seed, "example", "curve", mid_alpha, mid_n, 0))
        lo, hi = StageRecord.read(d, stage="templates").info["positivity_limits"]
        grid = alpha_grid[(alpha_grid >= lo) & (alpha_grid <= hi)]
        lnl = mixture_log_likelihood(draw.gather(pool.density[(one, one)], pool.density[(one, zero)]),
                                     draw.gather(pool.density[(zero, one)], pool.density[(zero, zero)]), grid)[0]
        builder.add_curve(est, sm, grid, -2 * (lnl - lnl.max()), alpha=mid_alpha, n_events=mid_n)
    return builder.to_dataset(), templates


def _events_per_toy(ds, cells):
    """toys.n_events_of = signal: n_events is the grid's n, and ``events_per_toy`` holds every cell's N."""
    if not any(c.n_signal is not None for c in cells):
        return ds
    from .dataset import fraction_dim

    names = [k for k, _ in cells[0].fractions]
    dims = [fraction_dim(k) for k in names] + ["n_events"]
    arr = np.zeros([ds.sizes[d] for d in dims], dtype=np.int64)
    for c in cells:
        at = [int(np.flatnonzero(np.isclose(ds[fraction_dim(k)].values, f))[0]) for k, f in c.fractions]
        arr[(*at, int(np.flatnonzero(ds["n_events"].values == c.n_label)[0]))] = c.n_events
    ds["n_events"].attrs.update(long_name="expected events of the parameter-of-interest components per toy "
                                          "(toys.n_events_of: signal)", units="events")
    ds["events_per_toy"] = (dims, arr, {"long_name": "events per toy N = n_events / (1 - sum of nuisance fractions)",
                                        "units": "events"})
    return ds


def _add_fraction_cells(builder, templates, cells) -> None:
    """Cells with nuisance components: every treatment's fits, the fitted nuisances, the nuisance-aware bound."""
    from ..store.artefacts import load_fraction_batch

    for c in cells:
        t = templates[(c.estimator, c.smearing)]
        comps = tuple(t.components)
        truth = c.true_fractions(comps)
        f = np.array([truth[k] for k in comps])
        nuisance = {comps.index(k): k for k, _ in c.fractions}
        bounds = {}
        for treatment in c.treatments:
            how, w = c.fit_treatment(treatment, comps)
            bounds[treatment] = float(t.cramer_rao(f, c.n_events, num=[1], den=[0, 1], treatment=how,
                                                   widths=w or None).bound)
        offset = 0
        for b, n in enumerate(c.batches):
            batch = load_fraction_batch(c.batch_file(b))
            for treatment in c.treatments:
                fit = batch.fits[treatment]
                builder.add(c.estimator, c.smearing, c.alpha, c.n_label, fit, offset=offset, draw=batch.draw,
                            cramer_rao=bounds[treatment], treatment=treatment, fractions=dict(c.fractions),
                            fraction_hat={k: fit.fractions[:, i] for i, k in nuisance.items()})
            offset += n


def network_table(train: Mapping[str, Mapping], templates: Mapping[str, Mapping]) -> str:
    """The study's networks (ROC AUC on the test split, per class against the reference for a K-class one)
    and the closure of every density ratio (nn_multiclass, nn_pairwise, ratio, ratio_calibrated), from the
    stage records."""
    if not train:
        return ""
    lines = ["Networks (ROC AUC on the test split; K-class: s_k / (s_k + s_ref) of each class against the first)",
             "| network | classes | ROC AUC | epochs |", "|---|---|---|---|"]
    for label, rec in train.items():
        info, comps = rec["info"], rec["settings"]["components"]
        per = info.get("roc_auc_vs_first")
        auc = (", ".join(f"{k} vs {comps[0]}: {v:.4f}" for k, v in per.items()) if per
               else f"{comps[1]} vs {comps[0]}: {info['roc_auc']:.4f}")
        lines.append(f"| {label} | {', '.join(comps)} | {auc} | {info['epochs_run']} |")
    ratio = {k: r for k, r in templates.items() if "closure" in r["info"]}
    if ratio:
        lines += ["", "Density ratios r_k = p_k / p_ref on the test split (both means are 1 for a true ratio)",
                  "| estimator, smearing | component | mean r_k on reference events | mean 1/r_k on component events |",
                  "|---|---|---|---|"]
        for rec in ratio.values():
            where = f"{rec['settings']['estimator']}, {rec['settings']['smearing']}"
            for k, c in rec["info"]["closure"].items():
                lines.append(f"| {where} | {k} | {c['mean_r_on_reference']:.3f} ± {c['mean_r_on_reference_err']:.3f} "
                             f"| {c['mean_inverse_r_on_component']:.3f} ± "
                             f"{c['mean_inverse_r_on_component_err']:.3f} |")
    return "\n".join(lines)


def auc_table(records: Mapping[str, Mapping], *, smearing: str) -> str:
    """ROC AUC per network-input set (the paper's feature-subset study), from the train records."""
    if not records:
        return ""
    lines = [f"ROC AUC per network-input set (smearing: {smearing}; test split)",
             "| inputs | n inputs | ROC AUC | epochs |", "|---|---|---|---|"]
    for label, rec in records.items():
        info = rec["info"]
        lines.append(f"| {label} | {len(rec['settings']['network_inputs'])} | {info['roc_auc']:.4f} | "
                     f"{info['epochs_run']} |")
    return "\n".join(lines)


def reweight_table(records: Mapping[str, Mapping]) -> str:
    """The reweighting stage's checks per weight, from its records (held-out test split)."""
    if not records:
        return ""

    def pm(d, key):
        return f"{d[key]:.3f} ± {d[key + '_err']:.3f}"

    lines = ["Reweighting (held-out test split; docs/stages/reweight.md)",
             "| weight | source -> target | blinded | networks | <r> on source | <1/r> on target | "
             "two-sample AUC before | after | blinded share: source / reweighted / target | effective size |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, rec in records.items():
        i = rec["info"]
        ts = i.get("two_sample", {})

        def auc(label, region="control"):
            d = ts.get(label, {}).get(region)
            return pm(d, "auc") if d else "-"

        share = i.get("blinded_fraction")
        share_text = (f"{pm(share, 'source')} / {pm(share, 'reweighted_source')} / {pm(share, 'target')}"
                      if share else "-")
        lines.append(f"| {name} | {i['source']} -> {i['target']} | {i['blind'] or '-'} | {len(i['networks'])} | "
                     f"{pm(i['closure'], 'mean_r_on_reference')} | {pm(i['closure'], 'mean_inverse_r_on_component')} | "
                     f"{auc('before')} | {auc('after')} | {share_text} | "
                     f"{i['weights']['test']['effective_fraction']:.0%} |")
    if any("blinded" in rec["info"].get("two_sample", {}).get("after", {}) for rec in records.values()):
        lines += ["", "Two-sample AUC inside the blinded region (events no reweighting network trained on)",
                  "| weight | before | after |", "|---|---|---|"]
        for name, rec in records.items():
            ts = rec["info"].get("two_sample", {})
            if "blinded" in ts.get("after", {}):
                lines.append(f"| {name} | {pm(ts['before']['blinded'], 'auc')} | {pm(ts['after']['blinded'], 'auc')} |")
    features = {name: rec["info"].get("features") or {} for name, rec in records.items()}
    if any(features.values()):
        regions = [r for r in ("all", "control", "blinded") if any(r in f for fs in features.values() for f in fs.values())]
        lines += ["", "Per-feature shapes, chi2 / ndf of the source against the target before -> after reweighting "
                  "(test split, the target's equal-population bins)",
                  "| weight | feature | " + " | ".join(regions) + " |", "|---|---|" + "---|" * len(regions)]

        def cell(c):
            return (f"{c['before']['chi2_per_ndf']:.2f} -> {c['after']['chi2_per_ndf']:.2f} (ndf {c['after']['ndf']})"
                    if c else "-")

        for name, fs in features.items():
            for feature, by_region in fs.items():
                lines.append(f"| {name} | {feature} | " + " | ".join(cell(by_region.get(r)) for r in regions) + " |")
    return "\n".join(lines)
