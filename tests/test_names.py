"""The names shared by core, ablation and reports (core.names): one definition each, the one tracking-URI rule,
and child runs found page by page on a real MLflow store."""
from pathlib import Path

from mlflow.tracking import MlflowClient

from core.names import EVAL_METRICS, metric_mode, tracking_uri
from tracking.runs import child_runs
from tracking.tags import PARENT_ID_TAG
from stores import new_store_uri

ROOT = Path(__file__).resolve().parent.parent


def test_tracking_uri_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    here = tmp_path.resolve()
    assert tracking_uri(None) == f"sqlite:///{here / 'mlflow.db'}"
    assert tracking_uri("runs/m.db") == f"sqlite:///{here / 'runs' / 'm.db'}"
    assert tracking_uri("sqlite:///rel.db") == f"sqlite:///{here / 'rel.db'}"
    assert tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert tracking_uri("http://mlflow-host:5000") == "http://mlflow-host:5000"


def test_metric_direction():
    assert [metric_mode(m) for m in ("rank1", "mAP", "mINP", "loss", "loss_metric")] == ["max"] * 3 + ["min"] * 2


def test_child_runs_follow_every_page(tmp_path):
    client = MlflowClient(new_store_uri(tmp_path / 'm.db'))
    exp = client.create_experiment("paging")
    parent = client.create_run(exp).info.run_id
    made = {client.create_run(exp, tags={PARENT_ID_TAG: parent}).info.run_id for _ in range(5)}
    client.create_run(exp)  # not a child
    assert {r.info.run_id for r in child_runs(client, exp, parent, page_size=2)} == made


def test_the_ranking_metric_list_is_written_once():
    literal = ", ".join(f'"{m}"' for m in EVAL_METRICS)
    holders = [p.relative_to(ROOT).as_posix() for pkg in ("core", "ablation", "reports")
               for p in (ROOT / pkg).rglob("*.py") if literal in p.read_text()]
    assert holders == ["core/names.py"]


def test_the_report_bolds_by_the_one_direction_rule():
    import pandas as pd

    from reports.tables import best_value
    means = pd.Series([1.0, 2.0])
    assert [best_value(means, m) for m in ("rank1", "mINP", "loss", "loss_metric")] == [2.0, 2.0, 1.0, 1.0]
