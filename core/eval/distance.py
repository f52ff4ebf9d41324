"""Query x gallery distance matrices, computed in query chunks.

Why chunks: a Market-sized problem is 3368 x 15913, and the naive broadcast ``(q[:, None] - g[None]) ** 2``
would need a q x g x D temporary. Here each chunk is one GEMM plus the norms (the ||q||^2 + ||g||^2 - 2 q.g
expansion used by every re-id code base), written straight into its rows of the float32 numpy result (which is
what the rank metrics consume), so the extra memory beyond the result is a few vectors, not a q x g (or
chunk x g) buffer (``benchmarks/bench_eval.py`` measures both the time and the peak memory).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

METRICS = ("euclidean", "sqeuclidean", "cosine")


def _to_tensor(x) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(x))
    t = t.detach()
    if t.ndim != 2:
        raise ValueError(f"features must be 2-D [N, D], got shape {tuple(t.shape)}")
    return t.float()


def normalize(feats, eps: float = 1e-12):
    """L2-normalise each row; returns the input's kind (torch tensor or numpy array)."""
    if isinstance(feats, torch.Tensor):
        return F.normalize(feats.float(), p=2, dim=1, eps=eps)
    x = np.asarray(feats, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


@torch.no_grad()
def pairwise_distance(qf, gf, metric: str = "sqeuclidean", chunk_size: int = 512) -> np.ndarray:
    """``[len(qf), len(gf)]`` float32 distances between rows of ``qf`` and ``gf`` (torch or numpy).

    ``sqeuclidean``: ||q||^2 + ||g||^2 - 2 q.g, clamped at 0 (the expansion can go slightly negative);
    ``euclidean``: its square root; ``cosine``: 1 - cos, with the features L2-normalised internally.
    The work runs on ``qf``'s device in float32.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    q, g = _to_tensor(qf), _to_tensor(gf)
    g = g.to(q.device)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"feature dims differ: query {q.shape[1]} vs gallery {g.shape[1]}")
    if metric == "cosine":
        q, g = normalize(q), normalize(g)
    gt = g.t()
    g_sq = (g * g).sum(dim=1)[None, :]
    out = np.empty((q.shape[0], g.shape[0]), dtype=np.float32)
    on_cpu = q.device.type == "cpu"
    out_t = torch.from_numpy(out) if on_cpu else None
    for s in range(0, q.shape[0], chunk_size):
        qc = q[s:s + chunk_size]
        # On the CPU each chunk is computed in place in its rows of the output (a contiguous view): no chunk-sized
        # temporaries and no copy, so the extra memory is O(chunk + gallery), not O(chunk x gallery).
        d = out_t[s:s + chunk_size] if on_cpu else torch.empty((qc.shape[0], g.shape[0]), device=q.device)
        if metric == "cosine":
            torch.mm(qc, gt, out=d)
            d.neg_().add_(1.0)
        else:
            # A plain GEMM and then the norms, in place: measured faster on the CPU than addmm with beta=1
            # (MKL's accumulate-into-C path), and no chunk-sized temporary either.
            torch.mm(qc, gt, out=d)
            d.mul_(-2.0).add_((qc * qc).sum(dim=1, keepdim=True)).add_(g_sq).clamp_(min=0)
            if metric == "euclidean":
                d.sqrt_()
        if not on_cpu:
            out[s:s + chunk_size] = d.cpu().numpy()
    return out
