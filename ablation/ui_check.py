"""``python -m ablation.ui_check --study NAME``: the MLflow UI of a finished study, as a user sees it.

Starts ``mlflow server`` on the study's tracking store (or uses ``--server URL``), opens the experiment page (the
study's trials grouped by report row, with the rank1 / mAP / mINP and varied-parameter columns) and the compare view
of the study's child runs in headless Chromium, checks that every trial's run name and the rank1 / mAP columns are
on both pages, and saves a PNG screenshot and the rendered DOM of each page under ``--out``:

    python -m ablation.ui_check --study loss_comparison                       # ./mlflow.db
    python -m ablation.ui_check --study tiny --tracking-uri /tmp/s/mlflow.db --out /tmp/s/ui
    python -m ablation.ui_check --study tiny --server http://127.0.0.1:5000   # a running server

The experiment page opens through an MLflow "shared view" (experiment tag ``mlflow.sharedViewState.<study>``,
what the UI's Share button writes): filter ``tags.mlflow.parentRunId = <study run>``, columns rank1, mAP, mINP and
the study's varied keys, rows grouped by the ``group`` tag (mean of the seeds). The script writes that tag and
prints the links, which also work in a normal browser.

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
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.cli import ArgumentParser
from core.names import PARENT_ID_TAG, study_run_filter

CHROMIUM = "/usr/bin/chromium"
BROWSER_HOST = "mlflow-server.test"  # RFC 2606 reserved name; the browser maps it onto 127.0.0.1
VIEW_COLUMNS_METRICS = ("rank1", "mAP", "mINP")
VIEW_COLUMNS_PARAMS = ("loss.type", "loss.margin", "model.neck")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_executable() -> str:
    local = Path(sys.executable).with_name("mlflow")
    return str(local) if local.exists() else (shutil.which("mlflow") or "mlflow")


class MlflowServer:
    """An ``mlflow server`` subprocess on 127.0.0.1 (SQLite backend, local artifact folder, one worker).

    Started in its own process group and stopped by that group id, so nothing it spawned is left behind. The same
    port and stores can be started again after ``stop()`` (a server restart). ``app_name="basic-auth"`` with
    ``env={"MLFLOW_AUTH_CONFIG_PATH": ...}`` starts MLflow's user-and-password server; its Flask secret key is made
    once per instance, so a restarted server keeps it.
    """

    def __init__(self, backend_uri: str, artifacts_dir: str | Path, port: int | None = None,
                 log_path: str | Path | None = None, browser_host: str | None = None, app_name: str | None = None,
                 env: dict[str, str] | None = None):
        self.backend_uri = backend_uri
        self.artifacts_dir = Path(artifacts_dir)
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else self.artifacts_dir.parent / f"mlflow-server-{self.port}.log"
        self.browser_host = browser_host
        self.app_name = app_name
        self.env = dict(env or {})
        if app_name:
            self.env.setdefault("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_hex(32))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [mlflow_executable(), "server", "--backend-store-uri", self.backend_uri,
               "--artifacts-destination", str(self.artifacts_dir), "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1"]
        if self.app_name:
            cmd += ["--app-name", self.app_name]
        if self.browser_host:
            hosts = [f"{h}:{self.port}" for h in (self.browser_host, "127.0.0.1", "localhost")]
            cmd += ["--allowed-hosts", ",".join(hosts),
                    "--cors-allowed-origins", f"http://{self.browser_host}:{self.port}"]
        return cmd

    def start(self, timeout: float = 120) -> "MlflowServer":
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", **self.env)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.artifacts_dir.parent, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}; log: {self.log_path}\n"
                                   + self.log_path.read_text()[-2000:])
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s; log: {self.log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the server's process group, SIGKILL to what is left after ``timeout`` seconds."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.proc.poll()  # reap the direct child, else it counts as alive
                if not _group_alive(pgid):
                    break
                time.sleep(0.2)
            if not _group_alive(pgid):
                break
        self.proc.poll()
        self.proc = None

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def rest(base: str, method: str, endpoint: str, body: dict | None = None, params: dict | None = None) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read() or b"{}")


@dataclass
class StudyRuns:
    experiment_id: str
    parent_id: str
    group_keys: list[str]
    children: list[dict] = field(default_factory=list)

    @property
    def run_names(self) -> list[str]:
        return sorted(r["info"]["run_name"] for r in self.children)

    @property
    def run_ids(self) -> list[str]:
        return [r["info"]["run_id"] for r in sorted(self.children, key=lambda r: r["info"]["run_name"])]


def find_study_runs(base: str, study: str) -> StudyRuns:
    try:
        exp = rest(base, "GET", "experiments/get-by-name", params={"experiment_name": study})["experiment"]
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"ui_check: no experiment named {study!r} in this tracking store ({exc.code}); "
                         f"run the study first or pass --tracking-uri") from None
    exp_id = exp["experiment_id"]
    parents = rest(base, "POST", "runs/search", {
        "experiment_ids": [exp_id], "filter": study_run_filter(study),
        "order_by": ["attributes.start_time DESC"], "max_results": 1}).get("runs", [])
    if not parents:
        raise SystemExit(f"ui_check: experiment {study!r} has no study run (tag kind=study)")
    parent = parents[0]
    tags = {t["key"]: t["value"] for t in parent["data"].get("tags", [])}
    children, token = [], None
    while True:
        body = {"experiment_ids": [exp_id], "filter": f"tags.`{PARENT_ID_TAG}` = '{parent['info']['run_id']}'",
                "max_results": 1000}
        if token:
            body["page_token"] = token
        page = rest(base, "POST", "runs/search", body)
        children += page.get("runs", [])
        token = page.get("next_page_token")
        if not token:
            break
    if not children:
        raise SystemExit(f"ui_check: study run {parent['info']['run_id']} of {study!r} has no child runs")
    keys = [k for k in tags.get("study.group_keys", "").split(",") if k]
    return StudyRuns(exp_id, parent["info"]["run_id"], keys, children)


def share_study_view(base: str, study: str, runs: StudyRuns) -> str:
    """Write the shared view of the study's trials (an experiment tag); returns its key."""
    params = list(dict.fromkeys([*runs.group_keys, *VIEW_COLUMNS_PARAMS]))
    columns = [f"metrics.`{m}`" for m in VIEW_COLUMNS_METRICS] + [f"params.`{p}`" for p in params]
    state = {
        "searchFilter": f"tags.`{PARENT_ID_TAG}` = '{runs.parent_id}'",
        "selectedColumns": columns,
        # The UI applies widths to the columns named in columnOrder only (and in that order).
        "columnOrder": ["attributes.`Run Name`", *columns],
        "columnWidths": {"attributes.`Run Name`": 320, **{c: 150 for c in columns if c.startswith("metrics.")}},
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "group"}]},
    }
    key = re.sub(r"[^A-Za-z0-9_-]", "-", study)
    rest(base, "POST", "experiments/set-experiment-tag",
         {"experiment_id": runs.experiment_id, "key": f"mlflow.sharedViewState.{key}", "value": json.dumps(state)})
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
    p.add_argument("--tracking-uri", default=None, help="tracking store of the study (default: sqlite ./mlflow.db)")
    p.add_argument("--server", default=None, help="use this running MLflow server instead of starting one")
    p.add_argument("--out", default=None, help="folder for screenshots and DOM dumps (default outputs/ui/STUDY)")
    p.add_argument("--port", type=int, default=0, help="port of the server to start (default: a free one)")
    p.add_argument("--chromium", default=os.environ.get("CHROMIUM", CHROMIUM), help="Chromium executable")
    p.add_argument("--size", default="1920x1080", help="browser window WIDTHxHEIGHT")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chromium = shutil.which(args.chromium) or (args.chromium if os.access(args.chromium, os.X_OK) else None)
    if not chromium:
        print(f"ui_check: Chromium not found at {args.chromium}; install it (Debian: apt-get install -y chromium) "
              f"or pass --chromium PATH", file=sys.stderr)
        return 3
    out = Path(args.out or Path("outputs") / "ui" / args.study).resolve()
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.lower().split("x"))
    server = None
    if args.server:
        base = args.server.rstrip("/")
        origin, rules = base, None  # a server started elsewhere keeps its own host checks: open it by the URL given
    else:
        from core.names import tracking_uri
        uri = tracking_uri(args.tracking_uri)
        if not uri.startswith("sqlite:///"):
            print(f"ui_check: --tracking-uri {uri} is not a SQLite store; pass --server for a running server",
                  file=sys.stderr)
            return 2
        server = MlflowServer(uri, out / "server_artifacts", port=args.port or None,
                              log_path=out / "mlflow-server.log", browser_host=BROWSER_HOST)
        print(f"starting mlflow server on {server.url} for {uri} ...", flush=True)
        server.start()
        base = server.url
        origin = f"http://{BROWSER_HOST}:{server.port}"
        rules = f"MAP {BROWSER_HOST} 127.0.0.1, MAP * ~NOTFOUND"  # nothing else resolves: no traffic elsewhere
    try:
        runs = find_study_runs(base, args.study)
        key = share_study_view(base, args.study, runs)
        urls = page_urls(origin, key, runs)
        columns = ["rank1", "mAP"]
        # The compare view is long (plots, run details, every param, then the metrics): a taller window shows it.
        sizes = {"experiment": (width, height), "compare": (width, max(height, 2400))}
        results = {name: check_page(name, url, runs.run_names, columns, out, chromium, rules, sizes[name])
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
