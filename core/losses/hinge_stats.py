"""Training-side diagnostics of the losses that mine triplets: how many anchors still violate the margin, and the
angles of the pairs the loss mined (docs/ARCHITECTURE.md, "Embedding diagnostics").

A loss that mines (``TripletLoss``, the expAT losses) holds an optional :class:`HingeStats`; when the trainer turns
diagnostics on it gets one per loss term (both directions of bi-directional expAT share their term's). Each step
adds four sums into one tensor on the loss's device, under ``no_grad`` and without reading it back, so the step
gains no host-device synchronisation; the trainer reads the sums once per epoch (:meth:`HingeStats.pop`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch


class HingeStats:
    """Running ``[anchors, active hinges, sum of anchor-positive angles, sum of anchor-negative angles]``."""

    def __init__(self) -> None:
        self._sums: Optional[torch.Tensor] = None

    @torch.no_grad()
    def add(self, active: torch.Tensor, cos_ap: torch.Tensor, cos_an: torch.Tensor,
            weight: Optional[torch.Tensor] = None) -> None:
        """One step's mined triplets: ``active`` (bool, per anchor: its loss > 0) and the cosines between each
        anchor and its mined positive / negative; ``weight`` (bool or float per anchor, default 1) counts only
        some rows without selecting them (a boolean selection would wait for the device)."""
        if active.numel() == 0:
            return
        w = torch.ones_like(cos_ap, dtype=torch.float32) if weight is None else weight.float()
        deg = 180.0 / math.pi
        sums = torch.stack([w.sum(), (active.float() * w).sum(),
                            (cos_ap.float().clamp(-1, 1).acos() * w).sum() * deg,
                            (cos_an.float().clamp(-1, 1).acos() * w).sum() * deg])
        self._sums = sums if self._sums is None else self._sums + sums

    def pop(self) -> Optional[dict[str, float]]:
        """``{"active_hinge", "ap_angle", "an_angle"}`` over the anchors since the last pop (fraction, degrees),
        and start over; None when no anchor was seen."""
        if self._sums is None:
            return None
        n, active, ap, an = self._sums.tolist()
        self._sums = None
        if n == 0:  # every anchor lacked a positive or a negative
            return None
        return {"active_hinge": active / n, "ap_angle": ap / n, "an_angle": an / n}


def attach(term: torch.nn.Module, stats: Optional[HingeStats]) -> bool:
    """Give every mining loss inside ``term`` the same ``stats`` (None detaches); whether ``term`` mines."""
    found = False
    for module in term.modules():
        if hasattr(module, "hinge_stats"):
            module.hinge_stats = stats
            found = True
    return found
