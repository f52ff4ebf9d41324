"""Several studies as one paper-style table: rows the algorithm, one column per dataset, cells ``Top1 (mAP)``.

This is the layout of the expAT README's table (``94.7 (86.6)``, the best Rank-1 of each column in bold). Each
study contributes one column, named after the dataset its trials trained on (the ``data.dataset`` param; the study
name when two studies share a dataset). Rows are matched across studies by name: the ``name`` a study's
``targets:`` gives the row's group label (e.g. "Triplet Loss" for ``loss.type=triplet``, also in the columns of
studies without targets), else the group label. Where a study declares targets, the
published value and the difference (measured − published, Rank-1 and mAP) follow the measured column.
Pure functions; ``reports.build`` reads the studies and writes the files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from core.catalogue import CATALOGUE
from reports.exports import tex_escape
from reports.tables import pipe_table
from reports.targets import compare_targets, row_names



@dataclass(frozen=True)
class StudyColumn:
    """One study's contribution: its name, dataset (display name), aggregate table and targets."""

    study: str
    dataset: str
    agg: pd.DataFrame  # tables.aggregate output (rank1 and mAP at least)
    targets: dict | None


def dataset_name(values: Sequence) -> str:
    """The display name of the dataset(s) a study's trials used (``""`` when none was logged)."""
    names = list(dict.fromkeys(str(v) for v in values if isinstance(v, str) and v))
    return " + ".join(CATALOGUE[v].title if v in CATALOGUE else v for v in names)


def column_titles(columns: Sequence[StudyColumn]) -> list[str]:
    """The dataset per study; the study name where the dataset is unknown or shared with another column."""
    datasets = [c.dataset for c in columns]
    return [c.dataset if c.dataset and datasets.count(c.dataset) == 1 else
            (f"{c.dataset} ({c.study})" if c.dataset else c.study) for c in columns]


def paper_frame(columns: Sequence[StudyColumn]) -> pd.DataFrame:
    """Long form, one row per (row name, column): ``row``, ``column``, ``study``, ``group``, ``ran`` (the study
    has the row), ``n`` (finished seeds),
    ``rank1``/``mAP`` (measured means, NaN if not run or all failed) and ``rank1_published``, ``mAP_published``,
    ``rank1_diff``, ``mAP_diff`` (NaN without a target)."""
    records = []
    names = {}  # a name one study gives a group label names that label in every column
    for col in columns:
        names.update({g: n for g, n in row_names(col.targets).items() if g not in names})
    for title, col in zip(column_titles(columns), columns):
        targets = compare_targets(col.agg, col.targets).set_index("group")
        for group in [*col.agg.index, *[g for g in targets.index if g not in col.agg.index]]:
            rec = {"row": names.get(group, group), "column": title, "study": col.study, "group": group,
                   "ran": group in col.agg.index, "n": int(col.agg.at[group, "n"]) if group in col.agg.index else 0}
            for m in ("rank1", "mAP"):
                rec[m] = float(col.agg.at[group, f"{m}_mean"]) if group in col.agg.index else math.nan
                has = group in targets.index
                rec[f"{m}_published"] = float(targets.at[group, f"{m}_published"]) if has else math.nan
                rec[f"{m}_diff"] = rec[m] - rec[f"{m}_published"]
            records.append(rec)
    return pd.DataFrame(records, columns=["row", "column", "study", "group", "ran", "n", "rank1", "mAP",
                                          "rank1_published", "mAP_published", "rank1_diff", "mAP_diff"])


def _pair(r1: float, mp: float, fmt: str = "{:.1f}") -> str:
    if math.isnan(r1) and math.isnan(mp):
        return "—"
    show = lambda v: "—" if math.isnan(v) else fmt.format(v)  # noqa: E731
    return f"{show(r1)} ({show(mp)})"


def _layout(frame: pd.DataFrame):
    """Rows and columns in order of first appearance, the cells by (row, column), and the best Rank-1 per column."""
    rows = list(dict.fromkeys(frame["row"]))
    cols = list(dict.fromkeys(frame["column"]))
    cells = {(r.row, r.column): r for r in frame.itertuples()}
    best = {c: frame.loc[frame["column"] == c, "rank1"].round(1).max() for c in cols}
    with_targets = {c: frame.loc[frame["column"] == c, "rank1_published"].notna().any()
                    or frame.loc[frame["column"] == c, "mAP_published"].notna().any() for c in cols}
    return rows, cols, cells, best, with_targets


def render_paper_markdown(frame: pd.DataFrame, studies: Sequence[str], sources: Sequence[str] = ()) -> str:
    rows, cols, cells, best, with_targets = _layout(frame)
    headers = ["Algorithm"]
    for c in cols:
        headers.append(f"{c} (Top1/mAP)")
        if with_targets[c]:
            headers += [f"{c} published", f"{c} Δ"]
    body = []
    for row in rows:
        line = [row]
        for c in cols:
            cell = cells.get((row, c))
            if cell is None:
                line += ["—"] + (["—", "—"] if with_targets[c] else [])
                continue
            text = "failed" if cell.ran and cell.n == 0 else _pair(cell.rank1, cell.mAP)
            if not math.isnan(cell.rank1) and round(cell.rank1, 1) == best[c]:
                text = f"**{text}**"
            line.append(text)
            if with_targets[c]:
                line += [_pair(cell.rank1_published, cell.mAP_published),
                         _pair(cell.rank1_diff, cell.mAP_diff, "{:+.1f}")]
        body.append(line)
    note = ("Top1 (mAP): mean Rank-1 and mAP in % over each row's finished seeds; **bold**: best Top1 of the "
            "column; —: not run.")
    if any(with_targets.values()):
        note += " Published: the numbers the studies declare as targets; Δ: measured minus published."
    sources = [s for s in dict.fromkeys(sources) if s]
    if sources:
        note += " Sources: " + "; ".join(sources) + "."
    return "\n".join([f"# Results: {', '.join(studies)}", "", pipe_table(headers, body), "", note]) + "\n"


def render_paper_tex(frame: pd.DataFrame) -> str:
    """The same table as booktabs LaTeX (measured cells, the best Rank-1 per column in bold; published values in a
    column of their own where there are targets)."""
    rows, cols, cells, best, with_targets = _layout(frame)
    headers = ["Algorithm"]
    for c in cols:
        headers.append(tex_escape(c))
        if with_targets[c]:
            headers.append(f"{tex_escape(c)} (published)")
    body = []
    for row in rows:
        line = [tex_escape(row)]
        for c in cols:
            cell = cells.get((row, c))
            text = "--" if cell is None else _pair(cell.rank1, cell.mAP).replace("—", "--")
            if cell is not None and not math.isnan(cell.rank1) and round(cell.rank1, 1) == best[c]:
                text = f"\\textbf{{{text}}}"
            line.append(text)
            if with_targets[c]:
                line.append("--" if cell is None else
                            _pair(cell.rank1_published, cell.mAP_published).replace("—", "--"))
        body.append(" & ".join(line) + r" \\")
    return "\n".join([r"\begin{table}[t]", r"\centering", f"\\begin{{tabular}}{{l{'r' * (len(headers) - 1)}}}",
                      r"\toprule", " & ".join(headers) + r" \\", r"\midrule", *body, r"\bottomrule",
                      r"\end{tabular}", r"\end{table}"]) + "\n"
