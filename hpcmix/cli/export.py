"""``hpcmix export STORE --format root OUT``: an event store as a file other tools read (ROOT, via uproot)."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["root"]), default="root", show_default=True,
              help="file format: ROOT TTrees written with uproot (no ROOT install needed)")
@click.option("-s", "--sample", "samples", multiple=True, metavar="NAME",
              help="export only this sample (repeatable; default: every sample in the store)")
@click.option("--partial", is_flag=True, help="export the finished chunks of an unfinished store")
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists")
@click.option("--progress/--no-progress", default=True, show_default=True, help="show a progress bar")
def export(store: str, out: str, fmt: str, samples, partial: bool, overwrite: bool, progress: bool) -> None:
    """Write the event store STORE (events/<hash>.zarr) to OUT: per sample a TTree of the selected
    events (features with and without smearing, truth four-momenta and vertices, chunk, split) and
    a TTree of the cut flow per chunk, plus the store's layout as JSON (docs/stages/generate.md)."""
    from tqdm.auto import tqdm

    from ..store.export import export_root

    bars: dict[str, tqdm] = {}

    def step(sample: str, k: int, n: int) -> None:
        if sample not in bars:
            bars[sample] = tqdm(total=n, desc=f"export {sample}", unit="chunk", disable=not progress)
        bars[sample].update(1)

    try:
        written = export_root(store, out, samples=samples, partial=partial, overwrite=overwrite, progress=step)
    finally:
        for bar in bars.values():
            bar.close()
    for s, w in written["samples"].items():
        click.echo(f"{s}: {w['events']} events ({w['chunks']} chunks) -> TTrees {s}, {s}_cutflow"
                   + (f"; weights {', '.join(w['weights'])}" if w["weights"] else ""))
        for key, why in w["weights_left_out"].items():
            click.echo(f"{s}: weight {key} left out: {why}")
    click.echo(f"wrote {written['path']}" + (" (finished chunks only: --partial)" if written["partial"] else ""))
