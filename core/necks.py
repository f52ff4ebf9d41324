"""What ``model.neck`` means: the BN layout after global pooling and the feature each loss consumes.

One table serves the model (which BN layers to build), the loss recipes (which model output the metric and center
parts read) and the effective configuration (which ``model.*`` keys a trial reads). Torch-free, so the schema and
the study planner can use it without building anything.

- ``no``: no BN; the ID classifier and every loss work on the pooled feature; test on the pooled feature.
- ``bnneck`` (reid-strong-baseline): one BN shared by every modality; metric and center losses on the pre-BN
  feature, the ID loss on the post-BN feature; test on the post-BN feature.
- ``csbn`` (the authors' RGB-IR code): one BN per modality; every loss on the post-BN feature; test on it too.
  ``model.modality_specific_bn=false`` keeps this placement with one shared BN.
"""
from __future__ import annotations

from dataclasses import dataclass

GLOBAL_FEAT, NECK_FEAT = "global_feat", "neck_feat"  # model outputs (docs/ARCHITECTURE.md, "Model output")


@dataclass(frozen=True)
class Neck:
    batch_norm: bool
    per_modality: bool  # one BN per modality on cross-modal data (model.modality_specific_bn can share it)
    metric_feature: str  # the output the metric and center losses consume; the ID loss always reads the logits


NECKS = {
    "no": Neck(batch_norm=False, per_modality=False, metric_feature=GLOBAL_FEAT),
    "bnneck": Neck(batch_norm=True, per_modality=False, metric_feature=GLOBAL_FEAT),
    "csbn": Neck(batch_norm=True, per_modality=True, metric_feature=NECK_FEAT),
}

# The neck each algorithm's reference code pairs with it: what model.neck=auto resolves to.
RECIPE_NECK = {"triplet": "no", "bnneck": "bnneck", "expat": "csbn", "expat_center": "csbn"}


def neck_of(name: str) -> Neck:
    if name not in NECKS:
        raise ValueError(f"unknown neck {name!r}; valid: {', '.join(NECKS)}")
    return NECKS[name]
