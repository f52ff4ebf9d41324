"""Which knob matters: main effects of grid axes, and hyperparameter importance of search studies (pure functions).

Grid studies: a cell is one combination of the varied keys, its value the mean final metric over its seeds. The main
effect of a value of one axis is the mean of the cells with that value, each cell weighted equally (so averaged over
the other axes even when some cells lost trials), minus the mean of all cells.

Search studies (Optuna): the finished trials' final values and parameters are given to a fresh in-memory Optuna
study and to Optuna's fANOVA evaluator (``FanovaImportanceEvaluator``, a random forest over the parameters with a
fixed seed): the share of the metric's variance each parameter explains. The search space is not stored in MLflow,
so each parameter's range is the range its trials took (categorical when a value is not a number).
"""

from __future__ import annotations

import math
import warnings

import pandas as pd

from reports.collect import finished_mask

IMPORTANCE_EVALUATOR = "fANOVA (optuna.importance.FanovaImportanceEvaluator, seed 0)"


def _as_number(value: object) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def value_order(values) -> list:
    """Distinct values, numerically sorted when they are all numbers (MLflow params are strings), else in order."""
    distinct = list(dict.fromkeys(v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))))
    if distinct and all(_as_number(v) is not None for v in distinct):
        return sorted(distinct, key=_as_number)
    return distinct


def varied_keys(trials: pd.DataFrame, keys) -> list[str]:
    """The keys among ``keys`` that take at least two values over the finished trials."""
    done = trials[finished_mask(trials)]
    return [k for k in keys if k in done.columns and done[k].nunique(dropna=True) >= 2]


def cell_means(trials: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """Mean ``metric`` per combination of ``keys`` over finished trials: columns ``keys`` + ``mean``, ``n``."""
    done = trials[finished_mask(trials) & trials[metric].notna()]
    cells = done.groupby(keys, sort=False)[metric].agg(["mean", "size"]).reset_index()
    return cells.rename(columns={"size": "n"})


def main_effects(trials: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame:
    """One row per (axis, value): ``axis``, ``value``, ``mean`` (mean of that value's cells), ``effect`` (mean minus
    the mean of all cells) and ``cells``; axes in the given order, values in ``value_order``."""
    cells = cell_means(trials, keys, metric)
    grand = cells["mean"].mean()
    rows = []
    for key in keys:
        by_value = cells.groupby(key, sort=False)["mean"].agg(["mean", "size"])
        for value in value_order(by_value.index):
            mean = float(by_value.at[value, "mean"])
            rows.append({"axis": key, "value": value, "mean": mean, "effect": mean - grand,
                         "cells": int(by_value.at[value, "size"])})
    return pd.DataFrame(rows, columns=["axis", "value", "mean", "effect", "cells"])


def interaction_means(trials: pd.DataFrame, x_key: str, line_key: str, metric: str,
                      other_keys: list[str] = ()) -> pd.DataFrame:
    """Mean of the cells per (``x_key``, ``line_key``) value pair, averaged over ``other_keys``: the interaction
    plot's points. Columns ``x_key``, ``line_key``, ``mean``."""
    cells = cell_means(trials, [x_key, line_key, *other_keys], metric)
    return cells.groupby([x_key, line_key], sort=False)["mean"].mean().reset_index()


def best_trial(trials: pd.DataFrame, metric: str, mode: str) -> pd.Series | None:
    """The finished trial with the best final ``metric`` (the first one on a tie), or None."""
    done = trials[finished_mask(trials) & trials[metric].notna()]
    if done.empty:
        return None
    return done.loc[done[metric].idxmax() if mode == "max" else done[metric].idxmin()]


def param_importance(trials: pd.DataFrame, keys: list[str], metric: str, mode: str) -> pd.DataFrame:
    """fANOVA importance of each varied key for the final ``metric``: columns ``param``, ``importance`` (sums to 1),
    most important first. Empty with fewer than 2 finished trials or no varied key."""
    import optuna  # heavy; only search studies need it
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.importance import FanovaImportanceEvaluator

    done = trials[finished_mask(trials) & trials[metric].notna()]
    keys = [k for k in keys if k in done.columns and done[k].nunique(dropna=True) >= 2]
    if len(done) < 2 or not keys:
        return pd.DataFrame(columns=["param", "importance"])
    distributions, convert = {}, {}
    for key in keys:
        numbers = [_as_number(v) for v in done[key]]
        if all(n is not None for n in numbers):
            distributions[key] = FloatDistribution(min(numbers), max(numbers))
            convert[key] = _as_number
        else:
            distributions[key] = CategoricalDistribution(value_order(done[key].astype(str)))
            convert[key] = str
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    study.add_trials([optuna.trial.create_trial(params={k: convert[k](row[k]) for k in keys},
                                                distributions=distributions, value=float(row[metric]))
                      for _, row in done.iterrows()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks the evaluators experimental
        importances = optuna.importance.get_param_importances(
            study, evaluator=FanovaImportanceEvaluator(seed=0), normalize=True)
    return pd.DataFrame(list(importances.items()), columns=["param", "importance"])
