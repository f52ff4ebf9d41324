"""``python -m benchmarks.run [--only NAME] [--quick] [--out PATH]``: run the benchmark suite, print a table and
write ``benchmarks/RESULTS.md``.

Every ``benchmarks/bench_*.py`` module is discovered; each exposes ``NAME`` and ``run(quick) -> list[Figure]``.
A module that fails to import or raises is reported as an error row (and exit status 1), not a crash of the suite.
RESULTS.md records the machine, the library versions, the load of the machine around each benchmark (these
machines are shared: a ratio measured in one process is the robust number, an absolute time is not), every figure
beside its reference with the ratio and its target, and a GPU section (run where CUDA is available, otherwise
skipped with a note, never faked).

``--quick`` runs scaled-down sizes in a few minutes; ``EXPAT_BENCH_SCALE=0.25`` (the test suite) shrinks them
further. Only a full run of every benchmark writes ``benchmarks/RESULTS.md`` by default; a ``--quick`` or ``--only``
run writes to ``--out``, or to ``benchmarks/RESULTS.local.md`` without it, so it never overwrites the committed
full results by accident.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import Figure

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "RESULTS.md"
LOCAL_OUT = HERE / "RESULTS.local.md"
LIBRARIES = ("torch", "torchvision", "numpy", "ray", "mlflow", "optuna", "cv2", "matplotlib")


@dataclass
class Outcome:
    module: str
    name: str
    figures: list[Figure] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    load_before: str = ""
    load_after: str = ""


# --- discovery and execution ---------------------------------------------------------------------------------

def discover() -> list[str]:
    return sorted(p.stem for p in HERE.glob("bench_*.py"))


def selected(modules: list[str], only: list[str] | None) -> list[str]:
    if not only:
        return modules
    wanted = {o.removeprefix("bench_") for o in only}
    unknown = wanted - {m.removeprefix("bench_") for m in modules}
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {sorted(unknown)}; available: "
                         f"{[m.removeprefix('bench_') for m in modules]}")
    return [m for m in modules if m.removeprefix("bench_") in wanted]


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def run_module(module: str, quick: bool) -> Outcome:
    out = Outcome(module=module, name=module.removeprefix("bench_"), load_before=loadavg())
    import torch
    threads = torch.get_num_threads()  # a module may change it; the next one starts from the same state
    start = time.perf_counter()
    try:
        mod = importlib.import_module(f"benchmarks.{module}")
        out.name = getattr(mod, "NAME", out.name)
        figures = list(mod.run(quick))
        bad = [f for f in figures if not isinstance(f, Figure)]
        if bad or not figures:
            raise TypeError(f"run() must return a non-empty list of benchmarks.common.Figure, got {figures!r}")
        out.figures = figures
    except BaseException as exc:  # noqa: BLE001 - one benchmark must not take the suite down
        if isinstance(exc, KeyboardInterrupt):
            raise
        out.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        tb = traceback.format_exc()
        print(tb, file=sys.stderr)
    out.seconds = time.perf_counter() - start
    out.load_after = loadavg()
    torch.set_num_threads(threads)
    return out


# --- targets ----------------------------------------------------------------------------------------------------

_TARGET = re.compile(r"ratio\s*(<=|>=|<|>)\s*([-+0-9.eE]+)")


def target_met(fig: Figure) -> bool | None:
    """Whether ``fig`` meets its target: ``extra['met']`` when the module decided, else a ``ratio OP X`` target."""
    if isinstance(fig.extra.get("met"), bool):
        return fig.extra["met"]
    m = _TARGET.search(fig.target or "")
    if not m or fig.ratio is None:
        return None
    op, bound = m.group(1), float(m.group(2).rstrip("."))
    r = fig.ratio
    return {"<=": r <= bound, ">=": r >= bound, "<": r < bound, ">": r > bound}[op]


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        if x != x:
            return "n/a"
        if x == 0:
            return "0"
        a = abs(x)
        if a >= 1000:
            return f"{x:,.0f}"
        if a >= 0.01:
            return f"{x:.{digits}g}" if a < 100 else f"{x:.1f}"
        return f"{x:.3g}"
    return str(x)


def met_text(m: bool | None) -> str:
    return {True: "yes", False: "**NO**", None: "-"}[m]


# --- environment -------------------------------------------------------------------------------------------------

def machine_info() -> dict[str, str]:
    info = {"CPU": platform.processor() or "unknown"}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["CPU"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info["cores"] = f"{cores} usable ({os.cpu_count()} online)"
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines()
                      if ln.startswith("MemTotal")).split()[1])
        info["RAM"] = f"{kb / 2 ** 20:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        info["RAM"] = "unknown"
    info["OS"] = platform.platform()
    return info


def library_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception:  # noqa: BLE001
            out[name] = "not installed"
    return out


def cuda_status() -> tuple[bool, str]:
    try:
        import torch
        if torch.cuda.is_available():
            return True, torch.cuda.get_device_name(0)
        return False, f"torch {torch.__version__} reports torch.cuda.is_available() == False"
    except Exception as exc:  # noqa: BLE001
        return False, f"torch could not be queried ({exc})"


# --- GPU part (only where CUDA is available) ----------------------------------------------------------------------

def gpu_figures(quick: bool, device: str = "cuda") -> list[Figure]:
    """Train step of the project's ResNet-50 model (256x128, BNNeck + triplet recipe) with AMP vs float32, with
    ``cudnn.benchmark`` on, and host-to-device copies from pinned vs pageable memory. Also callable with
    ``device='cpu'`` (bfloat16 autocast) to check the code path on machines without a GPU."""
    import torch
    from core.config import load_config
    from core.factory import build_loss, build_model
    from benchmarks.common import best_time

    on_gpu = device.startswith("cuda")
    small = float(os.environ.get("EXPAT_BENCH_SCALE", "1")) < 1 or not on_gpu
    arch, (h, w), n = ("resnet18", (64, 32), 8) if small else ("resnet50", (256, 128), 32 if quick else 64)
    steps = 2 if small else (5 if quick else 20)
    if on_gpu:
        torch.backends.cudnn.benchmark = True
    cfg = load_config("quick_market", {"model.arch": arch, "loss.type": "bnneck", "data.height": h,
                                       "data.width": w})
    num_classes = 751
    dev = torch.device(device)
    amp_dtype = torch.float16 if on_gpu else torch.bfloat16
    pids = torch.arange(n // 4).repeat_interleave(4).to(dev)
    batch = {"images": torch.randn(n, 3, h, w, device=dev), "pids": pids,
             "camids": torch.zeros(n, dtype=torch.long, device=dev),
             "modality": torch.zeros(n, dtype=torch.long, device=dev)}

    def make(amp: bool):
        model = build_model(cfg, num_classes).to(dev)
        crit = build_loss(cfg, num_classes, model.feat_dim).to(dev)
        opt = torch.optim.Adam(list(model.parameters()) + list(crit.parameters()), lr=3.5e-4)
        scaler = torch.amp.GradScaler(device.split(":")[0], enabled=amp and on_gpu)

        def step():
            with torch.autocast(device_type=dev.type, dtype=amp_dtype, enabled=amp):
                out = model(batch["images"], modality=batch["modality"])
                loss, _ = crit(out, batch)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if on_gpu:
                torch.cuda.synchronize()
        return step

    def per_sec(step) -> float:
        return n * steps / best_time(lambda: [step() for _ in range(steps)], repeat=2, warmup=1)

    fp32, amp = per_sec(make(False)), per_sec(make(True))
    figs = [Figure(f"train step img/s with AMP ({arch} {h}x{w}, batch {n}, {device})", amp, "img/s",
                   "the same step in float32", fp32, "ratio >= 1.0",
                   notes=f"autocast {str(amp_dtype).removeprefix('torch.')}"
                         f"{' + GradScaler, cudnn.benchmark on' if on_gpu else ' (CPU check of the code path)'}",
                   extra={"device": device})]
    host = torch.randn(256 if not small else 16, 3, h, w)
    pinned = host.pin_memory() if on_gpu else host.clone()

    def copy(src):
        def go():
            src.to(dev, non_blocking=True)
            if on_gpu:
                torch.cuda.synchronize()
        return go
    mib = host.numel() * 4 / 2 ** 20
    t_pin, t_page = best_time(copy(pinned), 5, 1), best_time(copy(host), 5, 1)
    figs.append(Figure(f"host-to-device copy MiB/s, pinned memory ({device})", mib / t_pin, "MiB/s",
                       "the same copy from pageable memory", mib / t_page, "ratio >= 1.0",
                       notes=f"{mib:.0f} MiB batch of images", extra={"device": device}))
    return figs


# --- output ------------------------------------------------------------------------------------------------------

def table_rows(outcomes: list[Outcome]) -> list[list[str]]:
    rows = []
    for o in outcomes:
        if o.error:
            rows.append([o.name, "ERROR", o.error, "-", "-", "-", "-", "-"])
            continue
        for f in o.figures:
            rows.append([o.name, f.name, f"{fmt(f.value)} {f.unit}", f.reference_name or "-",
                         f"{fmt(f.reference_value)} {f.unit}" if f.reference_value is not None else "-",
                         fmt(f.ratio), f.target or "-", met_text(target_met(f))])
    return rows


HEADER = ["benchmark", "figure", "value", "reference", "reference value", "ratio", "target", "met"]


def print_table(outcomes: list[Outcome]) -> None:
    rows = [HEADER] + table_rows(outcomes)
    clip = [[c if len(c) <= 60 else c[:57] + "..." for c in r] for r in rows]
    widths = [max(len(r[i]) for r in clip) for i in range(len(HEADER))]
    for j, r in enumerate(clip):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if j == 0:
            print("  ".join("-" * w for w in widths))


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(outcomes: list[Outcome], quick: bool, started: str, total_s: float, gpu: dict) -> str:
    lines = ["# Benchmark results", ""]
    mode = "quick (`--quick`, scaled-down sizes)" if quick else "full (issue 5 sizes)"
    scale = os.environ.get("EXPAT_BENCH_SCALE")
    if scale:
        mode += f", EXPAT_BENCH_SCALE={scale}"
    lines += [f"- Command: `python -m benchmarks.run {' '.join(sys.argv[1:])}`".rstrip(),
              f"- Mode: {mode}", f"- Date: {started}", f"- Wall time of the suite: {total_s:.0f} s", ""]
    lines += ["Every figure is measured in the same process as its reference, on the same inputs; the ratio is "
              "value / reference (lower is better for times, higher for throughputs). These machines are shared: "
              "the load average before and after each benchmark is listed below, and absolute times move with it "
              "while ratios move much less.", ""]
    lines += ["## Machine", "", "| | |", "| --- | --- |"]
    lines += [f"| {k} | {_md_cell(v)} |" for k, v in machine_info().items()]
    lines += ["", "## Library versions", "", "| library | version |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in library_versions().items()]
    lines += ["", "## Figures", "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in table_rows(outcomes)]
    missed = [(o.name, f) for o in outcomes for f in o.figures if target_met(f) is False]
    errors = [o for o in outcomes if o.error]
    lines += ["", f"Targets met: {sum(target_met(f) is True for o in outcomes for f in o.figures)}, missed: "
                  f"{len(missed)}" + (f" ({', '.join(f'{n}: {f.name}' for n, f in missed)})" if missed else "")
              + f"; errors: {len(errors)}.", ""]
    lines += ["## GPU", ""]
    if gpu["available"]:
        lines += [f"CUDA device: {gpu['device']}. AMP (autocast + GradScaler), pinned host memory and "
                  f"`cudnn.benchmark` were measured:", ""]
        if gpu.get("error"):
            lines += [f"The GPU part failed: {gpu['error']}", ""]
        for f in gpu.get("figures", []):
            lines.append(f"- {f.name}: {fmt(f.value)} {f.unit} vs {f.reference_name} {fmt(f.reference_value)} "
                         f"{f.unit} (ratio {fmt(f.ratio)}; {f.notes})")
        lines.append("")
    else:
        lines += [f"No GPU is available on this machine ({gpu['device']}). The GPU part of the suite (the "
                  "train step with AMP, pinned-memory host-to-device copies, `cudnn.benchmark`) was **skipped**; "
                  "no GPU numbers are reported. Everything above ran on the CPU.", ""]
    lines += ["## Details", ""]
    for o in outcomes:
        lines.append(f"### {o.name} (`benchmarks/{o.module}.py`)")
        lines += ["", f"{o.seconds:.0f} s; load average before {o.load_before}, after {o.load_after}.", ""]
        if o.error:
            lines += [f"**Error**: `{o.error}` (traceback on stderr of the run).", ""]
            continue
        for f in o.figures:
            lines.append(f"- **{f.name}**: {fmt(f.value)} {f.unit}; {f.reference_name or 'no reference'}: "
                         f"{fmt(f.reference_value)} {f.unit if f.reference_value is not None else ''}; ratio "
                         f"{fmt(f.ratio)}; target {f.target or '-'}: {met_text(target_met(f))}.")
            if f.notes:
                lines.append(f"  {f.notes}")
            simple = {k: v for k, v in f.extra.items() if k not in ("markdown", "met")
                      and (isinstance(v, (int, float, bool)) or (isinstance(v, str) and len(v) < 120))}
            if simple:
                lines.append("  " + "; ".join(f"{k} = {fmt(v)}" for k, v in simple.items()))
        for f in o.figures:
            if f.extra.get("markdown"):
                lines += ["", f.extra["markdown"].rstrip()]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", metavar="NAME",
                   help="run only this benchmark (module bench_NAME); repeat for several")
    p.add_argument("--quick", action="store_true", help="scaled-down sizes: a few minutes on a 2-core CPU")
    p.add_argument("--out", default=None, help="where to write the markdown results (default: "
                                               "benchmarks/RESULTS.md for a full run of every benchmark, "
                                               "benchmarks/RESULTS.local.md with --quick or --only)")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else (LOCAL_OUT if args.quick or args.only else DEFAULT_OUT)
    modules = selected(discover(), args.only)
    # The scaling PNG goes beside the results: benchmarks/scaling.png for RESULTS.md, <stem>_scaling.png otherwise.
    os.environ["EXPAT_BENCH_PNG"] = str(HERE / "scaling.png" if out.resolve() == DEFAULT_OUT
                                        else out.resolve().parent / f"{out.stem}_scaling.png")
    started = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    t0 = time.perf_counter()
    outcomes = []
    for m in modules:
        print(f"== {m} ({'quick' if args.quick else 'full'}) ...", flush=True)
        o = run_module(m, args.quick)
        status = f"error: {o.error}" if o.error else f"{len(o.figures)} figure(s)"
        print(f"   {o.seconds:.0f} s, {status}", flush=True)
        outcomes.append(o)
    available, device = cuda_status()
    gpu = {"available": available, "device": device}
    if available:
        try:
            gpu["figures"] = gpu_figures(args.quick)
        except Exception as exc:  # noqa: BLE001
            gpu["error"] = f"{type(exc).__name__}: {exc}"
    total = time.perf_counter() - t0
    print()
    print_table(outcomes)
    if not available:
        print(f"\nGPU: skipped ({device})")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(outcomes, args.quick, started, total, gpu))
    print(f"\nwrote {out}")
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
