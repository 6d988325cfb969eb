"""How much H/A separation the events carry in phi* and Upsilon, without training a network.

Used by docs/REPRODUCTION.md to separate what the events hold from what a
classifier learns:

- the phi* amplitude a (fit to all splits) and the ROC AUC of cos(phi*), the
  best any function of phi* alone can do (the likelihood ratio is monotonic
  in cos phi*);
- the AUC of a binned likelihood ratio in (phi*, |Upsilon+|, |Upsilon-|):
  the phi* amplitude fitted per (|Upsilon+|, |Upsilon-|) quantile bin on the
  train split, scored on the test split.

    python docs/phi_star_information.py STORE.zarr [--m-vis-window 150 500]
"""

from __future__ import annotations

import argparse

import numpy as np

from hpcmix.stats.templates import fit_phi_star_templates
from hpcmix.store.events import EventStore
from hpcmix.train.metrics import roc_auc

NAMES = ["phi_star", "upsilon_plus", "upsilon_minus", "m_vis"]


def load(store: EventStore, splits, smeared: bool, window) -> tuple[np.ndarray, np.ndarray]:
    """(features, is_A) of the H and A samples in ``splits``, inside the m_vis window."""
    x, y = [], []
    for label, sample in enumerate(store.layout.samples):
        for split in splits:
            f = store.features(sample, split, smeared=smeared, names=NAMES).astype(float)
            x.append(f)
            y.append(np.full(len(f), label))
    x, y = np.concatenate(x), np.concatenate(y)
    keep = (x[:, 3] >= window[0]) & (x[:, 3] < window[1])
    return x[keep], y[keep]


def upsilon_bins(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    n = len(edges) - 1
    i = np.clip(np.searchsorted(edges, np.abs(x[:, 1])) - 1, 0, n - 1)
    j = np.clip(np.searchsorted(edges, np.abs(x[:, 2])) - 1, 0, n - 1)
    return i * n + j


def binned_ratio_auc(train, test, n_bins: int) -> float:
    """AUC of log p_A/p_H with p = c +- a_bin cos(phi*), a_bin the moment estimate <cos phi* (2y - 1)> / pi."""
    (xtr, ytr), (xte, yte) = train, test
    edges = np.quantile(np.abs(xtr[:, 1]), np.linspace(0, 1, n_bins + 1))
    b = upsilon_bins(xtr, edges)
    num = np.bincount(b, np.cos(xtr[:, 0]) * (2 * ytr - 1), n_bins**2)
    a = num / np.maximum(np.bincount(b, minlength=n_bins**2), 1) / np.pi
    c = 1 / (2 * np.pi)
    cos = np.cos(xte[:, 0])
    ab = a[upsilon_bins(xte, edges)]
    return roc_auc(yte, np.log((c + ab * cos) / (c - ab * cos)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store")
    parser.add_argument("--m-vis-window", nargs=2, type=float, default=(0.0, np.inf), metavar=("LO", "HI"))
    args = parser.parse_args()
    store = EventStore(args.store)
    for smeared in (False, True):
        everything = load(store, ("train", "template", "test"), smeared, args.m_vis_window)
        t = fit_phi_star_templates(everything[0][:, 0], everything[1] == 1)
        train, test = load(store, ("train",), smeared, args.m_vis_window), load(store, ("test",), smeared,
                                                                                  args.m_vis_window)
        line = (f"smearing {'detector' if smeared else 'none':8s} events {len(everything[1]):7d}  "
                f"a = {t.a:.4f}  AUC cos(phi*) {roc_auc(test[1], np.cos(test[0][:, 0])):.4f}")
        line += "".join(f"  AUC (phi*, |Y|) {n}x{n} bins {binned_ratio_auc(train, test, n):.4f}" for n in (4, 8))
        print(line)


if __name__ == "__main__":
    main()
