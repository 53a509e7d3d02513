"""Human annotation tool (paper §4.1, App. D / Fig. 9): ``python -m pvllm.annotate`` (docs/annotate.md).

Importing this package does not import starlette; the web app lives in :mod:`pvllm.annotate.app`.
"""

from pvllm.annotate.store import RUBRIC_LABELS, AnnotationStore, latest_annotations, load_samples

__all__ = ["RUBRIC_LABELS", "AnnotationStore", "latest_annotations", "load_samples"]
