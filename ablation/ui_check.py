"""``python -m ablation.ui_check --study NAME``: the MLflow UI of a finished study, as a user sees it.

Starts ``mlflow server`` on the study's SQLite tracking store (or uses a running server: ``--server URL`` or an
http ``--tracking-uri``), opens the experiment page (the study's trials grouped by report row, with the rank1 / mAP /
mINP and varied-parameter columns) and the compare view of the study's child runs in headless Chromium, checks that
every trial's run name is on both pages, the rank1 / mAP columns on the experiment page and the rank1 plot on
the compare view (its metrics list, in name order, starts with the diag.* metrics), and saves a PNG screenshot and the rendered
DOM of each page under ``--out``:

    python -m ablation.ui_check --study loss_comparison                       # ./mlflow.db
    python -m ablation.ui_check --study tiny --tracking-uri /tmp/s/mlflow.db --out /tmp/s/ui
    python -m ablation.ui_check --study tiny --server http://127.0.0.1:5000   # a running server

The experiment page opens through an MLflow "shared view" (experiment tag ``mlflow.sharedViewState.<study>``,
what the UI's Share button writes): filter ``tags.mlflow.parentRunId = <study run>``, columns rank1, mAP, mINP and
the study's varied keys, rows grouped by the ``group`` tag (mean of the seeds). The script writes that tag
(``MlflowClient.set_experiment_tag``) and prints the links, which also work in a normal browser.

The store is opened with the checks every tool makes (``tracking.store``): a SQLite path where no file is, a corrupt
or unwritable file, a server that is down or refuses the credentials are refused in one line (exit status 2), and
so are a missing study and a missing Chromium; nothing is created at a mistyped path.

Chromium (Debian package ``chromium``) runs with ``--headless --dump-dom`` / ``--screenshot`` and a fresh profile;
the browser reaches the server as ``http://mlflow-server.test:PORT`` mapped onto 127.0.0.1 (``--host-resolver-rules``;
every other name fails to resolve), i.e. as a user on another machine does, so the server is started with
``--allowed-hosts`` / ``--cors-allowed-origins`` for that name, as a shared server must be.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from ablation.mlflow_server import MlflowServer
from tracking.store import TrackingError, open_existing_store
from core.cli import ArgumentParser
from core.names import tracking_uri
from tracking.runs import child_runs, latest_study_run
from tracking.tags import KIND_STUDY, StudyTags, TrialTags

CHROMIUM = "/usr/bin/chromium"
BROWSER_HOST = "mlflow-server.test"  # RFC 2606 reserved name; the browser maps it onto 127.0.0.1
VIEW_COLUMNS_METRICS = ("rank1", "mAP", "mINP")
VIEW_COLUMNS_PARAMS = ("loss.type", "loss.margin", "model.neck")


class UiCheckError(Exception):
    """Bad input the UI check refuses in one line (exit status 2): no such study, run or store."""


@dataclass
class StudyRuns:
    experiment_id: str
    parent_id: str
    group_keys: list[str]
    children: list = field(default_factory=list)  # mlflow.entities.Run

    @property
    def run_names(self) -> list[str]:
        return sorted(r.info.run_name for r in self.children)

    @property
    def run_ids(self) -> list[str]:
        return [r.info.run_id for r in sorted(self.children, key=lambda r: r.info.run_name)]


def find_study_runs(client: MlflowClient, study: str, where: str) -> StudyRuns:
    """The study's latest parent run and its child runs (``where`` names the store in the errors)."""
    exp = client.get_experiment_by_name(study)
    if exp is None:
        raise UiCheckError(f"no experiment named {study!r} at {where}; run the study first "
                           f"(python -m ablation.run --study {study}) or pass --tracking-uri")
    parent = latest_study_run(client, exp.experiment_id, study)
    if parent is None:
        raise UiCheckError(f"experiment {study!r} at {where} has no study run (tag {StudyTags.key('kind')}={KIND_STUDY})")
    children = child_runs(client, exp.experiment_id, parent.info.run_id)
    if not children:
        raise UiCheckError(f"study run {parent.info.run_id} of {study!r} at {where} has no child runs")
    keys = list(StudyTags.from_tags(parent.data.tags).group_keys or ())
    return StudyRuns(exp.experiment_id, parent.info.run_id, keys, children)


def share_study_view(client: MlflowClient, study: str, runs: StudyRuns) -> str:
    """Write the shared view of the study's trials (an experiment tag, as the UI's Share button does); returns its
    key."""
    params = list(dict.fromkeys([*runs.group_keys, *VIEW_COLUMNS_PARAMS]))
    columns = [f"metrics.`{m}`" for m in VIEW_COLUMNS_METRICS] + [f"params.`{p}`" for p in params]
    state = {
        "searchFilter": TrialTags.filter(parent_run_id=runs.parent_id),
        "selectedColumns": columns,
        # The UI applies widths to the columns named in columnOrder only (and in that order).
        "columnOrder": ["attributes.`Run Name`", *columns],
        "columnWidths": {"attributes.`Run Name`": 320, **{c: 150 for c in columns if c.startswith("metrics.")}},
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": TrialTags.key("group")}]},
    }
    key = re.sub(r"[^A-Za-z0-9_-]", "-", study)
    client.set_experiment_tag(runs.experiment_id, f"mlflow.sharedViewState.{key}", json.dumps(state))
    return key


def page_urls(origin: str, study_key: str, runs: StudyRuns) -> dict[str, str]:
    q = urllib.parse.quote
    return {
        "experiment": f"{origin}/#/experiments/{runs.experiment_id}/runs?viewStateShareKey={q(study_key)}"
                      f"&workflowType=machine_learning",
        "compare": f"{origin}/#/compare-runs?runs={q(json.dumps(runs.run_ids))}"
                   f"&experiments={q(json.dumps([runs.experiment_id]))}&workflowType=machine_learning",
    }


def chromium_args(chromium: str, profile: str, width: int, height: int, budget_ms: int,
                  resolver_rules: str | None) -> list[str]:
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--hide-scrollbars", "--force-device-scale-factor=1",
            f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}"]
    return args + ([f"--host-resolver-rules={resolver_rules}"] if resolver_rules else [])


def run_chromium(args: list[str], timeout: float) -> str:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RuntimeError(f"chromium did not finish within {timeout:.0f} s") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return out


def visible_text(dom: str) -> str:
    """The page's text as a user reads it (scripts and styles dropped, tags removed, whitespace collapsed)."""
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.S | re.I)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom))).strip()


def missing_on_page(text: str, names: list[str], columns: list[str]) -> list[str]:
    missing = [f"run name {n!r}" for n in names if n not in text]
    missing += [f"column {c!r}" for c in columns if not re.search(rf"(?<![\w.]){re.escape(c)}(?![\w])", text)]
    return missing


def check_page(name: str, url: str, expect_names: list[str], expect_columns: list[str], out: Path,
               chromium: str, resolver_rules: str | None, size: tuple[int, int], attempts: int = 3) -> dict:
    """Render ``url``, check its text, save ``<name>.html`` and ``<name>.png``; a slow first render is retried."""
    missing: list[str] = []
    for attempt in range(1, attempts + 1):
        budget = 15000 * attempt
        with tempfile.TemporaryDirectory(prefix="ui-check-chromium-") as profile:
            base = chromium_args(chromium, profile, *size, budget, resolver_rules)
            dom = run_chromium([*base, "--dump-dom", url], timeout=60 + budget / 1000)
        (out / f"{name}.html").write_text(dom)
        text = visible_text(dom)
        missing = missing_on_page(text, expect_names, expect_columns)
        if not missing:
            break
    png = out / f"{name}.png"
    with tempfile.TemporaryDirectory(prefix="ui-check-chromium-") as profile:
        base = chromium_args(chromium, profile, *size, 15000 * attempt, resolver_rules)
        run_chromium([*base, f"--screenshot={png}", url], timeout=60 + 15 * attempt)
    ok_png = png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return {"url": url, "missing": missing, "screenshot": str(png) if ok_png else None, "attempts": attempt,
            "text_chars": len(text)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = ArgumentParser(prog="python -m ablation.ui_check", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", required=True, help="the study (= MLflow experiment) name")
    p.add_argument("--tracking-uri", default=None,
                   help="tracking store of the study: a SQLite file (default ./mlflow.db), served by an mlflow "
                        "server this check starts, or the URL of a running tracking server")
    p.add_argument("--server", default=None, help="use this running MLflow server (same as an http --tracking-uri)")
    p.add_argument("--out", default=None, help="folder for screenshots and DOM dumps (default outputs/ui/STUDY)")
    p.add_argument("--port", type=int, default=0, help="port of the server to start (default: a free one)")
    p.add_argument("--chromium", default=os.environ.get("CHROMIUM", CHROMIUM), help="Chromium executable")
    p.add_argument("--size", default="1920x1080", help="browser window WIDTHxHEIGHT")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Exit status 0 when both pages show the study, 1 when one does not (or the server did not start), 2 for bad
    input (one line on stderr): the window size, Chromium, the tracking store (the checks of ``tracking.store``:
    missing, corrupt or unwritable SQLite file, server down or refusing the credentials) or the study."""
    args = parse_args(argv)
    try:
        return _check(args)
    except (UiCheckError, TrackingError) as exc:
        print(f"ui_check: {exc}", file=sys.stderr)
        return 2


def _check(args: argparse.Namespace) -> int:
    size = re.fullmatch(r"([1-9][0-9]*)x([1-9][0-9]*)", args.size.lower())
    if not size:
        raise UiCheckError(f"--size {args.size!r} is not WIDTHxHEIGHT in pixels, e.g. 1920x1080")
    width, height = int(size[1]), int(size[2])
    chromium = shutil.which(args.chromium) or (args.chromium if os.access(args.chromium, os.X_OK) else None)
    if not chromium:
        raise UiCheckError(f"Chromium not found at {args.chromium}; install it (Debian: apt-get install -y "
                           f"chromium) or pass --chromium PATH")
    # A server URL (--server, or an http(s) --tracking-uri) is used as it is; a SQLite store gets a server of ours.
    uri = args.server.rstrip("/") if args.server else tracking_uri(args.tracking_uri)
    remote = uri.startswith(("http://", "https://"))
    if not remote and not uri.startswith("sqlite:///"):
        raise UiCheckError(f"--tracking-uri {uri} is neither a SQLite store nor a server URL; pass --server for a "
                           f"running server")
    # The store checks every tool makes (a missing SQLite file is refused, never created), then the study, all
    # before a server or a browser starts.
    client = open_existing_store(uri)
    runs = find_study_runs(client, args.study, uri)
    key = share_study_view(client, args.study, runs)
    out = Path(args.out or Path("outputs") / "ui" / args.study).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UiCheckError(f"--out {out} cannot be written ({exc.strerror}); pass --out with a writable folder") \
            from None
    server = None
    if remote:
        base, origin, rules = uri, uri, None  # a server started elsewhere keeps its own host checks: open its URL
    else:
        server = MlflowServer(uri, out / "server_artifacts", port=args.port or None,
                              log_path=out / "mlflow-server.log", browser_host=BROWSER_HOST)
        print(f"starting mlflow server on {server.url} for {uri} ...", flush=True)
        try:
            server.start()
        except RuntimeError as exc:
            print(f"ui_check: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
        base = server.url
        origin = f"http://{BROWSER_HOST}:{server.port}"
        rules = f"MAP {BROWSER_HOST} 127.0.0.1, MAP * ~NOTFOUND"  # nothing else resolves: no traffic elsewhere
    try:
        urls = page_urls(origin, key, runs)
        columns = ["rank1", "mAP"]
        # The compare view's metrics table is a short scrolling list in name order, whose first rows are the
        # diag.* metrics: it is checked for the metric its plot draws (rank1), the experiment page for both columns.
        expected = {"experiment": columns, "compare": columns[:1]}
        # The compare view is long (plots, run details, every param, then the metrics): a taller window shows it.
        sizes = {"experiment": (width, height), "compare": (width, max(height, 2400))}
        results = {name: check_page(name, url, runs.run_names, expected[name], out, chromium, rules, sizes[name])
                   for name, url in urls.items()}
    finally:
        if server is not None:
            server.stop()
    summary = {"study": args.study, "experiment_id": runs.experiment_id, "parent_run_id": runs.parent_id,
               "run_names": runs.run_names, "columns": columns, "pages": results,
               "links": page_urls(base, key, runs)}
    (out / "ui_check.json").write_text(json.dumps(summary, indent=2))
    failed = False
    for name, res in results.items():
        status = "ok" if not res["missing"] and res["screenshot"] else "FAILED"
        failed |= status != "ok"
        print(f"{name} page: {status}: {len(runs.run_names)} run names and columns {columns} "
              + (f"missing {res['missing']}" if res["missing"] else "all present")
              + f"; screenshot {res['screenshot']}")
    print(f"links (with the server running): {summary['links']['experiment']}\n  {summary['links']['compare']}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
