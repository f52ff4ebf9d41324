"""Study reports built from MLflow only (no Ray, no torch, no training code).

- ``reports.collect``: find a study's parent run and its trials in MLflow -> DataFrame (+ per-epoch history).
- ``reports.tables``: per-group mean ± std, Δ vs baseline, markdown rendering (pure functions).
- ``reports.plots``: PNG bar chart of final metrics and learning curves (matplotlib, Agg).
- ``reports.build``: ``build_report(...)`` and the CLI ``python -m reports.build --study NAME``.

Submodules are not imported here, so ``python -m reports.build`` and light imports stay cheap.
"""
