"""Finding a study's runs in MLflow: the latest study run, its child runs page by page, one trial's run.

The queries are built from the tag records (``tracking.tags``); the functions take the ``MlflowClient`` as an
argument and import nothing heavy.
"""
from __future__ import annotations

from typing import Any

from tracking.tags import KIND_STUDY, StudyTags, TrialTags


def study_run_filter(study: str) -> str:
    """The MLflow filter that finds the parent runs of ``study`` (newest first with ``attributes.start_time DESC``)."""
    return StudyTags.filter(kind=KIND_STUDY, study=study)


def latest_study_run(client: Any, experiment_id: str, study: str):
    """The most recently started parent run of ``study`` (``MlflowClient.search_runs``), or ``None``."""
    runs = client.search_runs([experiment_id], filter_string=study_run_filter(study),
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def child_runs(client: Any, experiment_id: str, parent_id: str, extra_filter: str = "", page_size: int = 1000) -> list:
    """Every child run of ``parent_id`` (``MlflowClient.search_runs``, page by page: no cap on the count)."""
    query = TrialTags.filter(parent_run_id=parent_id) + (f" and {extra_filter}" if extra_filter else "")
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=query, max_results=page_size, page_token=token)
        runs += list(page)
        token = getattr(page, "token", None)
        if not token:
            return runs


def trial_run(client: Any, experiment_id: str, parent_id: str, trial_id: str):
    """The child run of one trial, found by its tags in the store (no scan over the study's runs), or ``None``."""
    runs = client.search_runs([experiment_id], filter_string=TrialTags.filter(parent_run_id=parent_id,
                                                                              trial_id=trial_id), max_results=1)
    return runs[0] if runs else None
