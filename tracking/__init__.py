"""The MLflow side that the study driver (``ablation``) and the report builder (``reports``) share: the tag
contract (``tracking.tags``) and the run lookups (``tracking.runs``).

Neither Ray nor torch is imported here, and importing the package changes nothing in the process environment.
"""
