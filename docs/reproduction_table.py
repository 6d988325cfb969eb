"""Print the tables of docs/REPRODUCTION.md from hpcmix-output/paper-table1-small/results.zarr."""
import numpy as np, xarray as xr, json, glob, os
import hpcmix.results  # accessor
out = "hpcmix-output/paper-table1-small"
ds = xr.open_zarr(f"{out}/results.zarr", consolidated=False)
s = ds.mixture.summary()
paper = {("phi_star","none"): {0.5:(0.50,0.27),0.7:(0.71,0.27),0.9:(0.90,0.27)},
         ("phi_star","detector"): {0.5:(0.50,0.45),0.7:(0.70,0.46),0.9:(0.90,0.45)},
         ("nn","none"): {0.5:(0.50,0.21),0.7:(0.70,0.21),0.9:(0.90,0.21)},
         ("nn","detector"): {0.5:(0.48,0.37),0.7:(0.68,0.37),0.9:(0.88,0.37)}}
print("| method, smearing | alpha | paper mean +- sigma | hpcmix mean | hpcmix sigma (Gauss fit) | Cramer-Rao | coverage 68% | pull width | KS p (Wilks) |")
print("|---|---|---|---|---|---|---|---|---|")
for (m, sm), row in paper.items():
    for a, (pm, ps) in row.items():
        c = s.sel({"method": m, "smearing": sm, "alpha": a, "n_events": 100})
        print(f"| {m}, {sm} | {a} | {pm:.2f} +- {ps:.2f} | {float(c['mean']):.3f} +- {float(c['gauss_mean_err']):.3f} | "
              f"{float(c['gauss_sigma']):.3f} +- {float(c['gauss_sigma_err']):.3f} | {float(c['cramer_rao']):.3f} | "
              f"{float(c['coverage']):.3f} +- {float(c['coverage_err']):.3f} | {float(c['pull_width']):.2f} | {float(c['ks_pvalue']):.2f} |")
print()
print("| method, smearing | N | alpha | sigma (Gauss fit) | Cramer-Rao | sigma * sqrt(N/100) |")
print("|---|---|---|---|---|---|")
for m in ("phi_star", "nn"):
    for sm in ("none", "detector"):
        for n in (20, 100, 500):
            c = s.sel({"method": m, "smearing": sm, "alpha": 0.7, "n_events": n})
            print(f"| {m}, {sm} | {n} | 0.7 | {float(c['gauss_sigma']):.3f} +- {float(c['gauss_sigma_err']):.3f} | "
                  f"{float(c['cramer_rao']):.3f} | {float(c['gauss_sigma'])*np.sqrt(n/100):.3f} |")
print()
for sm in ("none", "detector"):
    for n in (20, 100, 500):
        p = float(s.sel({"method": "phi_star", "smearing": sm, "alpha": 0.7, "n_events": n})["gauss_sigma"])
        q = float(s.sel({"method": "nn", "smearing": sm, "alpha": 0.7, "n_events": n})["gauss_sigma"])
        print(f"gain NN over phi* ({sm}, N={n}): {1 - q/p:.1%}")
print()
for d in sorted(glob.glob(f"{out}/templates/*/done.json")):
    print(d, json.load(open(d)))
for d in sorted(glob.glob(f"{out}/models/*/done.json")):
    i = json.load(open(d)); print(d, i.get("roc_auc"), i.get("epochs_run"), i.get("n_train"))
print(ds.attrs.get("pool_reuse_note"))
