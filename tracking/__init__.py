"""The MLflow side that the study driver (``ablation``) and the report builder (``reports``) share: the tag
contract (``tracking.tags``), the run lookups (``tracking.runs``), the store checks and the retry rule
(``tracking.store``) and the MLflow defaults the entry points apply (``tracking.defaults``).

Neither Ray nor torch is imported here, and importing the package changes nothing in the process environment.
"""
