"""What the embedding diagnostics cost: the evaluation's ``diag.*`` metrics and the training's ``train.*`` counters.

Evaluation side, on the two problems the evaluation benchmarks build (``bench_eval``: Market-1501-sized, 3368 x 15913,
2048-d; ``bench_sysu``: SYSU-MM01-sized, 3803 IR queries x a 6775-image RGB pool, 10 trials): the time of
``core.inference.diagnostics`` (angles over the protocol's pairs, a fixed-seed sample of whole queries beyond
``core.eval.diagnostics.EVAL_MAX_PAIRS`` pairs; separability; norm statistics per modality; the modality gap;
the angle samples) against the evaluation it rides on, from features to metrics (the distance
matrix and the protocol's ranking metrics; the forward pass, which the diagnostics reuse, is left out, so the
ratio is an upper bound of the share of a real evaluation). The feature norms are taken batch by batch inside the
feature extraction, beside the forward pass, and are left out with it. Target (issue 19): ratio <= 0.05.

Training side: ``Trainer.train_step`` with the counters on (``eval.diagnostics=true``: active hinges and mined-pair
angles of every mining loss term) against the same trainer with them off, steps interleaved on the same batches,
process CPU time with one thread (as ``bench_train``). Target: ratio >= 0.95 (no measurable slowdown).
"""
from __future__ import annotations

import sys
import time

import numpy as np

from benchmarks import bench_eval, bench_sysu
from benchmarks.common import Figure

NAME = "diagnostics"


def _eval_figure(label: str, preset: str, evaluation, qf, gf, q, g, repeat: int) -> Figure:
    """``core.inference.diagnostics`` under ``preset``'s protocol against ``evaluation()``, interleaved."""
    import torch
    from core.config import load_config
    from core.eval.diagnostics import EVAL_MAX_PAIRS
    from core.inference import diagnostics
    cfg = load_config(preset)
    qt, gt = torch.from_numpy(qf), torch.from_numpy(gf)
    # the norms are taken batch by batch during the feature extraction (core.inference.extract_features), next to
    # the forward pass; here the test feature's stand in for the pooled ones too
    feat_norms = torch.cat([qt.norm(dim=1), gt.norm(dim=1)])
    norms = {"": feat_norms, "pooled_": feat_norms}
    diag = lambda: diagnostics(cfg, qt, gt, q, g, norms)  # noqa: E731
    times = bench_eval.interleaved_best({"diag": diag, "eval": evaluation}, repeat)
    metrics, samples = diag()
    return Figure(f"diagnostics / evaluation ({label})", times["diag"], "s",
                  "the evaluation from features (distances + protocol metrics)", times["eval"], "ratio <= 0.05",
                  notes=f"{len(q[0])} x {len(g[0])} pairs, at most {EVAL_MAX_PAIRS:,} looked at (whole queries, "
                        f"fixed seed); {len(samples['pos'])} positive / {len(samples['neg'])} negative angles kept; "
                        f"angle AUC {metrics['diag.angle_auc']:.3f}, positive {metrics['diag.pos_angle_mean']:.1f} "
                        f"deg, negative {metrics['diag.neg_angle_mean']:.1f} deg",
                  extra={"threads": bench_eval._threads(), "max_pairs": EVAL_MAX_PAIRS})


def market_figure(quick: bool) -> Figure:
    from core.eval import evaluate_rank, pairwise_distance
    sz = bench_eval.sizes(quick)
    qf, gf, q_pids, g_pids, q_cams, g_cams = bench_eval.make_market_features(**sz)

    def evaluation():
        evaluate_rank(pairwise_distance(qf, gf, metric="sqeuclidean"), q_pids, g_pids, q_cams, g_cams)

    q = (q_pids, q_cams, np.zeros_like(q_pids))
    g = (g_pids, g_cams, np.zeros_like(g_pids))
    return _eval_figure(f"Market-sized, {sz['num_query']}x{sz['num_gallery']}, {sz['dim']}-d", "quick_market",
                        evaluation, qf, gf, q, g, repeat=2 if quick else 3)


def sysu_figure(quick: bool) -> Figure:
    from core.eval import evaluate_sysu
    sz = bench_sysu.sizes(quick)
    qf, gf, q_pids, g_pids, q_cams, g_cams = bench_sysu.make_sysu_features(**sz)

    def evaluation():
        evaluate_sysu(qf, gf, q_pids, g_pids, q_cams, g_cams, num_trials=sz["trials"])

    q = (q_pids, q_cams, np.ones_like(q_pids))  # IR queries, RGB pool
    g = (g_pids, g_cams, np.zeros_like(g_pids))
    return _eval_figure(f"SYSU-sized, {sz['num_query']} IR x {sz['pool']} RGB pool, {sz['trials']} trials, "
                        f"{sz['dim']}-d", "quick", evaluation, qf, gf, q, g, repeat=2 if quick else 3)


def train_figure(quick: bool) -> Figure:
    from benchmarks.bench_train import interleaved_best, make_trainer, take_batches
    threads = 1
    on, off = make_trainer({}, threads), make_trainer({"eval.diagnostics": False}, threads)
    batches = take_batches(on, 4 if quick else 20)
    best = interleaved_best({"on": on.train_step, "off": off.train_step}, batches, clock=time.process_time)
    counters = on.criterion.pop_diagnostics()
    assert counters and not off.criterion.pop_diagnostics(), "the counters should be on in one trainer only"
    images = batches[0]["images"].shape[0]
    return Figure("Trainer.train_step img/s with the train.* counters, quick preset (resnet18 64x32, batch 32)",
                  images / best["on"], "img/s", "the same trainer with eval.diagnostics=false",
                  images / best["off"], "ratio >= 0.95",
                  notes=f"{threads} torch thread, process CPU time, best of {len(batches)} interleaved steps on the "
                        f"same batches; counters {sorted(counters)}",
                  extra={"threads": threads})


def run(quick: bool) -> list[Figure]:
    import torch
    torch.set_num_threads(bench_eval._threads())
    return [market_figure(quick), sysu_figure(quick), train_figure(quick)]


if __name__ == "__main__":
    start = time.perf_counter()
    for f in run(quick="--quick" in sys.argv):
        print(f, f.ratio)
    print(f"{time.perf_counter() - start:.1f} s")
