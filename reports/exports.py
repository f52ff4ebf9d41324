"""The results table as files for other tools: ``table.csv`` (numbers) and ``table.tex`` (a LaTeX booktabs table).

Both have one row per group in the report's order. The CSV carries every number behind the markdown tables, unrounded:
per metric the mean, sample std and 95% CI of the mean, and per compared metric the difference from the baseline,
its 95% CI, the test, the raw and Holm-corrected p-values and the seeds needed for 80% power. The LaTeX table shows
mean ± std per metric (the best mean of each column in bold, as in report.md) and, with a baseline, Δ of the first
compared metric with its corrected p-value; it needs ``\\usepackage{booktabs}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from reports.collect import finished_mask
from reports.stats import NO_TEST, mean_ci
from reports.tables import best_value, label, p_text

COMPARISON_COLUMNS = {"diff": "diff", "ci_low": "diff_ci_low", "ci_high": "diff_ci_high", "test": "test",
                      "p": "p", "p_holm": "p_holm", "seeds_needed": "seeds_for_80pct_power"}


def table_frame(trials: pd.DataFrame, agg: pd.DataFrame, comps: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The CSV's content: group, n, n_failed, then ``<metric>_mean/_std/_ci_low/_ci_high`` per metric and
    ``<metric>_diff/_diff_ci_low/_diff_ci_high/_test/_p/_p_holm/_seeds_for_80pct_power`` per compared metric."""
    metrics = [c[: -len("_mean")] for c in agg.columns if c.endswith("_mean")]
    done = trials[finished_mask(trials)]
    columns = {"group": agg.index, "n": agg["n"].to_numpy(), "n_failed": agg["n_failed"].to_numpy()}
    for m in metrics:
        cis = [mean_ci(done.loc[done["group"] == g, m]) for g in agg.index]
        columns[f"{m}_mean"] = agg[f"{m}_mean"].to_numpy()
        columns[f"{m}_std"] = agg[f"{m}_std"].to_numpy()
        columns[f"{m}_ci_low"] = [lo for lo, _ in cis]
        columns[f"{m}_ci_high"] = [hi for _, hi in cis]
    for m, comp in comps.items():
        for src, dst in COMPARISON_COLUMNS.items():
            columns[f"{m}_{dst}"] = comp[src].reindex(agg.index).to_numpy()  # the baseline row stays empty
    return pd.DataFrame(columns)  # built at once: a column added at a time fragments the frame (pandas warns)


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_csv(path, index=False)
    return Path(path)


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: object) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _tex_cell(mean: float, std: float, n: int, bold: bool) -> str:
    if n == 0:
        return "failed"
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.2f}" + ("" if n < 2 or math.isnan(std) else f" $\\pm$ {std:.2f}")
    return f"\\textbf{{{text}}}" if bold else text


def render_tex(agg: pd.DataFrame, comps: Mapping[str, pd.DataFrame], baseline: str | None,
               caption: str = "") -> str:
    """A booktabs ``tabular`` inside a ``table`` float: group, n, mean ± std per metric (best in bold), then
    Δ and corrected p of the first compared metric when there is a baseline."""
    metrics = [c[: -len("_mean")] for c in agg.columns if c.endswith("_mean")]
    first = next(iter(comps), None)
    headers = ["Group", "$n$", *(label(m) for m in metrics)]
    if first:
        headers += [f"$\\Delta$ {label(first)} [95\\% CI]", "$p$ (Holm)"]
    best = {m: best_value(agg[f"{m}_mean"], m) for m in metrics}
    body = []
    for group, r in agg.iterrows():
        n = int(r["n"])
        cells = [tex_escape(group) + (" (baseline)" if group == baseline else ""), str(n)]
        for m in metrics:
            mean = r[f"{m}_mean"]
            bold = n > 0 and best[m] is not None and not math.isnan(mean) and round(mean, 2) == best[m]
            cells.append(_tex_cell(mean, r[f"{m}_std"], n, bold))
        if first:
            if group in comps[first].index:
                c = comps[first].loc[group]
                cells.append("n/a" if c["test"] == NO_TEST else
                             f"{c['diff']:+.2f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]")
                cells.append(p_text(c["p_holm"]).replace("<", "$<$"))
            else:
                cells += ["--", "--"]
        body.append(" & ".join(cells) + r" \\")
    spec = "l" + "r" * (len(headers) - 1)
    lines = [r"\begin{table}[t]", r"\centering"]
    if caption:
        lines.append(f"\\caption{{{tex_escape(caption)}}}")
    lines += [f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(headers) + r" \\", r"\midrule", *body,
              r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tex(agg: pd.DataFrame, comps: Mapping[str, pd.DataFrame], baseline: str | None, path: Path,
              caption: str = "") -> Path:
    Path(path).write_text(render_tex(agg, comps, baseline, caption), encoding="utf-8")
    return Path(path)
