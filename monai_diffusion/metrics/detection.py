"""Threshold-free detection metrics for anomaly scores: AUROC and AUPRC (average precision).

Both take scores and binary labels of the same shape and flatten them, so they serve subject-level scores
``(N,)`` and pixel-level score maps ``(B, 1, *spatial)`` alike (index with a brain mask first to evaluate inside
the brain). Higher scores mean "more likely positive" (anomalous).
"""

from __future__ import annotations

import torch
from monai.metrics import compute_roc_auc

__all__ = ["auroc", "auprc"]


def _flatten_pair(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, value in (("scores", scores), ("labels", labels)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
    if scores.shape != labels.shape:
        raise ValueError(
            f"scores and labels must have the same shape, got {tuple(scores.shape)} and {tuple(labels.shape)}."
        )
    if labels.dtype != torch.bool and not torch.all((labels == 0) | (labels == 1)):
        raise ValueError("labels must be binary (values 0 and 1 only).")
    s, y = scores.detach().reshape(-1).double().cpu(), labels.detach().reshape(-1).bool().cpu()
    if torch.isnan(s).any():
        raise ValueError("scores contain nan.")
    return s, y


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (MONAI ``compute_roc_auc``), ties between scores counted as one half.

    Equals the probability that a random positive scores higher than a random negative (Mann-Whitney U / (n+ n-)).

    Args:
        scores: scores of any shape (flattened); higher means positive.
        labels: binary labels of the same shape.

    Returns:
        AUROC in [0, 1] as a Python float (1: perfectly separated, 0: perfectly reversed, 0.5: chance).

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on mismatched shapes, non-binary labels, nan scores or labels holding only one class (AUROC is
            undefined there).
    """
    s, y = _flatten_pair(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.numel():
        raise ValueError(f"labels must hold both classes; got {n_pos} positives out of {y.numel()}.")
    return float(compute_roc_auc(s, y.long()))  # type: ignore[arg-type]  # a float for 1D input


def auprc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the precision-recall curve as step-wise average precision.

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct score values ``t_k`` in decreasing order, where ``P_k``
    and ``R_k`` are the precision and recall of the prediction ``score >= t_k`` and ``R_0 = 0``. Tied scores enter
    together (one step), so the result does not depend on the order of tied items. This is the definition of
    scikit-learn's ``average_precision_score`` (no interpolation); a random scorer gets the positive rate.

    Args:
        scores: scores of any shape (flattened); higher means positive.
        labels: binary labels of the same shape.

    Returns:
        Average precision in (0, 1] as a Python float.

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on mismatched shapes, non-binary labels, nan scores, or no positive label (undefined).
    """
    s, y = _flatten_pair(scores, labels)
    n_pos = int(y.sum())
    if n_pos == 0:
        raise ValueError("labels hold no positive; average precision is undefined.")
    order = torch.argsort(s, descending=True)
    s_sorted, tp = s[order], torch.cumsum(y[order].double(), 0)
    last = torch.ones_like(s_sorted, dtype=torch.bool)
    last[:-1] = s_sorted[1:] != s_sorted[:-1]  # last index of every run of tied scores
    tp = tp[last]
    predicted = torch.arange(1, s.numel() + 1, dtype=torch.float64)[last]
    precision = tp / predicted
    recall = tp / n_pos
    recall_step = torch.diff(recall, prepend=torch.zeros(1, dtype=torch.float64))
    return float((recall_step * precision).sum())
