"""One self-contained ``index.html`` for a report folder: tables, figures, per-cell summary, provenance.

Self-contained means one file and no network: the figures are embedded as base64 PNG data, the
style is inline, and there is no script, so the page opens from a laptop, an e-mail or a web
share the same way. The tables are the report's own Markdown text, turned into HTML tables here
(a small pipe-table reader, not a Markdown dependency).
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import xarray as xr

__all__ = ["INDEX_NAME", "markdown_to_html", "summary_to_html", "write_index"]

INDEX_NAME = "index.html"

# greys only: a browser test tells the figures' coloured pixels from the page's own
_CSS = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; background: #fff; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
.note { background: #f6f6f6; border-left: 4px solid #888; padding: 0.5em 1em; }
.wide { overflow-x: auto; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 560px; border: 1px solid #eee; }
figcaption { font-size: 0.8em; color: #555; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
dt { font-weight: bold; } dd { margin: 0 0 0.4em 1.5em; }
"""


_SEPARATOR = re.compile(r"^:?-+:?$")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_to_html(text: str) -> str:
    """The report's Markdown subset as HTML: pipe tables (first row the header), '#' headings,
    other lines as paragraphs; every text escaped."""
    out, rows = [], []

    def flush():
        if rows:
            head, body = rows[0], rows[1:]
            if body and all(_SEPARATOR.match(c) for c in body[0]):   # the |---|:---:| line under the header
                body = body[1:]
            out.append("<div class=\"wide\"><table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                       + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r)
                                                         + "</tr>" for r in body) + "</tbody></table></div>")
            rows.clear()

    for line in text.splitlines():
        if line.lstrip().startswith("|"):
            rows.append(_cells(line))
            continue
        flush()
        if not line.strip():
            continue
        if line.startswith("#"):
            level = min(6, 2 + len(line) - len(line.lstrip("#")))
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        else:
            out.append(f"<p>{html.escape(line.strip())}</p>")
    flush()
    return "\n".join(out)


def _number(v) -> str:
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return str(float(v))          # nan, inf, -inf
        if float(v).is_integer() and abs(v) < 1e15:
            return str(int(v))            # counts (n_toys) in full
        return f"{v:.4g}"
    return html.escape(str(v))


def summary_to_html(summary: xr.Dataset) -> str:
    """The per-cell summary (``ds.mixture.summary()``): one row per cell, one column per quantity,
    each column's meaning and units listed under the table."""
    names = list(summary.data_vars)
    dims = list(summary[names[0]].dims) if names else []
    values = [summary[v].transpose(*dims).values.ravel() for v in names]
    coords = [summary[d].values for d in dims]
    index = np.indices([len(c) for c in coords]).reshape(len(dims), -1) if dims else np.zeros((0, 1), int)
    head = "".join(f"<th>{html.escape(d)}</th>" for d in dims) + "".join(f"<th>{html.escape(v)}</th>" for v in names)
    body = []
    for j in range(index.shape[1]):
        cell = "".join(f"<td>{_number(coords[k][index[k, j]])}</td>" for k in range(len(dims)))
        body.append("<tr>" + cell + "".join(f"<td>{_number(col[j])}</td>" for col in values) + "</tr>")

    def meaning(v: str) -> str:
        units = summary[v].attrs.get("units")
        return html.escape(str(summary[v].attrs.get("long_name", ""))) + (f" [{html.escape(str(units))}]"
                                                                          if units else "")
    legend = "".join(f"<dt>{html.escape(v)}</dt><dd>{meaning(v)}</dd>" for v in names)
    return (f"<div class=\"wide\"><table class=\"summary\"><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
            f"</tbody></table></div>\n<details><summary>columns</summary><dl>{legend}</dl></details>")


def _provenance(attrs: Mapping) -> str:
    """Every attribute of the results: scalars in a table, structures (job, addresses) as JSON."""
    scalars, blocks = [], []
    for k, v in attrs.items():
        if isinstance(v, (dict, list, tuple)):
            blocks.append(f"<h3>{html.escape(k)}</h3><pre>{html.escape(json.dumps(v, indent=1, default=str))}</pre>")
        elif isinstance(v, str) and v.startswith(("{", "[")):   # JSON text (the job)
            try:
                v = json.dumps(json.loads(v), indent=1)
                blocks.append(f"<h3>{html.escape(k)}</h3><pre>{html.escape(v)}</pre>")
                continue
            except ValueError:
                scalars.append((k, v))
        else:
            scalars.append((k, v))
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in scalars)
    return f"<table><tbody>{rows}</tbody></table>\n" + "\n".join(blocks)


def _figure(path: str) -> str:
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    name = html.escape(os.path.basename(path))
    return f"<figure><img src=\"data:image/png;base64,{data}\" alt=\"{name}\"><figcaption>{name}</figcaption></figure>"


def write_index(out, *, title: str, tables: Sequence[tuple[str, str]], figures: Iterable[str] = (),
                summary: xr.Dataset | None = None, attrs: Mapping | None = None, notes: Sequence[str] = ()) -> str:
    """Write ``out/index.html`` and return its path.

    ``tables``: (heading, Markdown text) in reading order; ``figures``: PNG paths, embedded;
    ``summary``: the per-cell summary Dataset; ``attrs``: the results' attributes (provenance);
    ``notes``: shown first (the pool-reuse note).
    """
    out = os.fspath(out)
    os.makedirs(out, exist_ok=True)
    parts = [f"<h1>{html.escape(title)}</h1>"]
    parts += [f"<p class=\"note\">note: {html.escape(n)}</p>" for n in notes if n]
    for heading, text in tables:
        if text:
            parts.append(f"<h2>{html.escape(heading)}</h2>\n{markdown_to_html(text)}")
    figures = list(figures)
    if figures:
        parts.append(f"<h2>Figures ({len(figures)})</h2>\n" + "\n".join(_figure(p) for p in figures))
    if summary is not None:
        parts.append("<h2>Per-cell summary</h2>\n" + summary_to_html(summary))
    if attrs:
        parts.append("<h2>Provenance</h2>\n" + _provenance(attrs))
    page = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")
    path = os.path.join(out, INDEX_NAME)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path
