"""Stage tasks of a study: each reads its inputs from disk and writes its output folder.

They are plain functions so that Dask can run them on any worker (training on
the GPU pool, toys on the CPU pool); the pipeline only passes paths and settings.
A stage's folder is complete once its ``done.json`` is written, last.
"""

from __future__ import annotations

import json
import os
import pickle
import types
from typing import Any, Mapping, Sequence

import numpy as np

from ..store import EventStore

DONE_FILE = "done.json"
POOL_FILE = "test_pool.npz"
TEMPLATES_FILE = "templates.pkl"


def is_done(folder: str) -> bool:
    return os.path.exists(os.path.join(folder, DONE_FILE))


def read_done(folder: str) -> dict:
    with open(os.path.join(folder, DONE_FILE)) as f:
        return json.load(f)


def mark_done(folder: str, info: Mapping[str, Any]) -> dict:
    """Write ``done.json`` atomically (rename), so a crash never leaves half a record."""
    tmp = os.path.join(folder, DONE_FILE + ".tmp")
    with open(tmp, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, os.path.join(folder, DONE_FILE))
    return dict(info)


def labelled_features(store: EventStore, samples: Sequence[str], split: str, *, smeared: bool,
                      names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Features of both samples of one split, stacked, with labels 0 (first sample) and 1 (second)."""
    xs = [store.features(s, split, smeared=smeared, names=names) for s in samples]
    y = np.concatenate([np.full(len(x), k, dtype=np.int8) for k, x in enumerate(xs)])
    return np.concatenate(xs), y


def train_task(store_path: str, samples: Sequence[str], smeared: bool, feature_names: Sequence[str],
               classifier: Mapping[str, Any], seed: int, out_dir: str, progress: bool = False) -> dict:
    """Train the classifier on the train split; the AUC is measured on the test split.

    ``progress`` prints a line per epoch (for ``hpcmix train``; on a Dask worker it would only reach its log).
    """
    from ..train.fit import train_classifier
    from ..train.settings import ClassifierSettings
    from .cluster import worker_info

    store = EventStore(store_path)
    x, y = labelled_features(store, samples, "train", smeared=smeared, names=feature_names)
    x_test, y_test = labelled_features(store, samples, "test", smeared=smeared, names=feature_names)
    settings = ClassifierSettings.from_config(**{"seed": seed, **dict(classifier)})
    result = train_classifier(x, y, feature_names=list(feature_names), out_dir=out_dir, settings=settings,
                              x_test=x_test, y_test=y_test, progress=progress)
    info = {k: getattr(result, k) for k in ("roc_auc", "roc_auc_sample", "n_train", "n_val", "n_test", "device",
                                            "epochs_run", "best_epoch", "samples_per_second", "train_seconds")}
    info["worker"] = worker_info()
    if info["worker"]["slurm_job_id"]:
        # what SLURM itself says this job holds (scontrol), not what we asked for
        from .cluster import slurm_job_gres

        gres = slurm_job_gres()
        info["slurm_gres"] = {k: v for k, v in gres.items() if k != "raw"}
    return mark_done(out_dir, info)


def _method_values(store: EventStore, samples, split: str, *, method: str, smeared: bool, model_dir: str | None):
    """Per-event values the method fits (phi*, or the network output), for both samples of a split."""
    if method == "phi_star":
        return [store.features(s, split, smeared=smeared, names=["phi_star"])[:, 0].astype(float) for s in samples]
    from ..train.fit import load_classifier

    clf = load_classifier(model_dir)
    names = list(clf.feature_names)
    return [clf.predict(store.features(s, split, smeared=smeared, names=names)).astype(float) for s in samples]


def templates_task(store_path: str, samples: Sequence[str], smeared: bool, method: str, model_dir: str | None,
                   template_settings: Mapping[str, Any], out_dir: str) -> dict:
    """Build p_H, p_A for one method and evaluate them once on every test-pool event."""
    from ..stats.templates import KDETemplates, fit_phi_star_templates

    store = EventStore(store_path)
    os.makedirs(out_dir, exist_ok=True)
    if method == "phi_star":
        # the analytic model's a (and c) come from the labelled training events
        v_h, v_a = _method_values(store, samples, "train", method=method, smeared=smeared, model_dir=None)
        templates = fit_phi_star_templates(np.concatenate([v_h, v_a]),
                                           np.r_[np.zeros(v_h.size, bool), np.ones(v_a.size, bool)])
        info = {"a": templates.a, "a_err": templates.a_err, "c": templates.c}
    elif method == "nn":
        # KDEs on the template split, separate from the events the network trained on
        v_h, v_a = _method_values(store, samples, "template", method=method, smeared=smeared, model_dir=model_dir)
        # job-file names -> KDETemplates keywords
        settings = {{"logit_clip": "clip"}.get(k, k): v for k, v in template_settings.items() if v is not None}
        templates = KDETemplates(np.concatenate([v_h, v_a]), np.r_[np.zeros(v_h.size, bool), np.ones(v_a.size, bool)],
                                 **settings)
        info = {"bandwidths": list(templates.bandwidths), "space": templates.space}
    else:
        raise ValueError(f"unknown method {method!r}; allowed: phi_star, nn")
    t_h, t_a = _method_values(store, samples, "test", method=method, smeared=smeared, model_dir=model_dir)
    pa_h, ph_h = templates.densities(t_h)
    pa_a, ph_a = templates.densities(t_a)
    np.savez(os.path.join(out_dir, POOL_FILE), x_h=t_h, x_a=t_a, pa_h=pa_h, ph_h=ph_h, pa_a=pa_a, ph_a=ph_a)
    with open(os.path.join(out_dir, TEMPLATES_FILE), "wb") as f:
        pickle.dump(templates, f)
    lo, hi = templates.positivity_limits()
    info.update({"method": method, "smeared": smeared, "positivity_limits": [float(lo), float(hi)],
                 "n_pool_h": int(t_h.size), "n_pool_a": int(t_a.size)})
    return mark_done(out_dir, info)


def load_templates(folder: str):
    with open(os.path.join(folder, TEMPLATES_FILE), "rb") as f:
        return pickle.load(f)


def toys_task(template_dir: str, method: str, smearing: str, alpha: float, n_events: int, n_toys: int,
              batch: int, study_seed: int) -> dict:
    """Draw and fit one batch of toys of one cell; returns the fit arrays and pool-reuse counts."""
    from ..stats.fitter import fit_mixture
    from ..stats.toys import draw_toys, toy_seed

    pool = np.load(os.path.join(template_dir, POOL_FILE))
    limits = tuple(read_done(template_dir)["positivity_limits"])
    rng = toy_seed(study_seed, method, smearing, alpha, n_events, batch)
    draw = draw_toys(pool["pa_a"].size, pool["pa_h"].size, alpha=alpha, n_events=n_events, n_toys=n_toys, rng=rng)
    fit = fit_mixture(draw.gather(pool["pa_a"], pool["pa_h"]), draw.gather(pool["ph_a"], pool["ph_h"]),
                      alpha_true=alpha, alpha_limits=limits)
    # ship back only what the results need, not the (n_toys, N) index arrays
    reuse = types.SimpleNamespace(uses_a=draw.uses_a, uses_h=draw.uses_h, max_uses=draw.max_uses)
    return {"fit": fit, "draw": reuse, "note": draw.note()}
