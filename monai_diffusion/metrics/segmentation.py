"""Overlap and boundary metrics for binary masks, with an explicit convention for empty masks.

``dice`` and ``hd95`` wrap MONAI's ``DiceMetric`` and ``compute_hausdorff_distance(percentile=95)``. MONAI returns
``nan`` (with a warning) or ``inf`` when a mask is empty, depending on options; healthy subjects have empty lesion
masks, so this module fixes one convention and applies it before calling MONAI:

============================  ======  =======
case                          Dice    HD95
============================  ======  =======
both masks empty              1       0
exactly one mask empty        0       nan
both non-empty                MONAI   MONAI
============================  ======  =======

``best_dice`` is the best Dice an anomaly score map can reach over thresholds, pooled over all pixels of all
items (the ``[Dice]`` of Baur et al., Medical Image Analysis 69:101952, 2021), and ``dice_at_threshold`` applies a
fixed threshold (e.g. one chosen by ``best_dice`` on validation data) and returns per-item Dice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.metrics import DiceMetric, compute_hausdorff_distance

__all__ = ["dice", "hd95", "best_dice", "dice_at_threshold"]


def _check_binary_pair(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two ``(B, 1, *spatial)`` binary masks; return them as bool tensors."""
    for name, value in (("pred", pred), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
    if pred.ndim not in (4, 5) or pred.shape[1] != 1:
        raise ValueError(f"pred must be a binary mask of shape (B, 1, *spatial) in 2D or 3D, got {tuple(pred.shape)}.")
    if pred.shape != target.shape:
        raise ValueError(
            f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}."
        )
    out = []
    for name, value in (("pred", pred), ("target", target)):
        if value.dtype != torch.bool and not torch.all((value == 0) | (value == 1)):
            raise ValueError(f"{name} must be binary (values 0 and 1 only); threshold scores first.")
        out.append(value.bool())
    return out[0], out[1]


def dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Dice coefficient ``2 |P & T| / (|P| + |T|)`` of binary masks, per batch item (MONAI ``DiceMetric``).

    Empty masks: both empty gives 1, exactly one empty gives 0 (module docstring).

    Args:
        pred: ``(B, 1, *spatial)`` binary mask (bool, or 0/1 values), 2D or 3D.
        target: reference mask of the same shape.

    Returns:
        ``(B,)`` float32 tensor in [0, 1].

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on shapes other than ``(B, 1, *spatial)``, mismatched shapes or non-binary values.
    """
    p, t = _check_binary_pair(pred, target)
    metric = DiceMetric(include_background=True, reduction="none", ignore_empty=False)
    out = torch.as_tensor(metric(p.float(), t.float())).reshape(-1).float()
    p_empty, t_empty = ~p.flatten(1).any(1), ~t.flatten(1).any(1)
    out = torch.where(p_empty & t_empty, torch.ones_like(out), out)
    return torch.where(p_empty ^ t_empty, torch.zeros_like(out), out)


def hd95(pred: torch.Tensor, target: torch.Tensor, spacing: float | Sequence[float] | None = None) -> torch.Tensor:
    """95th-percentile symmetric Hausdorff distance between mask boundaries, per batch item.

    MONAI's ``compute_hausdorff_distance(percentile=95, directed=False)``: the larger of the two directed 95th
    percentiles of the Euclidean distances from the boundary pixels of one mask to the boundary of the other.
    Empty masks: both empty gives 0, exactly one empty gives ``nan`` (module docstring).

    Args:
        pred: ``(B, 1, *spatial)`` binary mask (bool, or 0/1 values), 2D or 3D.
        target: reference mask of the same shape.
        spacing: pixel spacing (one number, or one per spatial axis); ``None`` measures in pixels.

    Returns:
        ``(B,)`` float32 tensor (in units of ``spacing``).

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on shapes other than ``(B, 1, *spatial)``, mismatched shapes or non-binary values.
    """
    p, t = _check_binary_pair(pred, target)
    p_any, t_any = p.flatten(1).any(1), t.flatten(1).any(1)
    out = torch.full((p.shape[0],), math.nan, dtype=torch.float32)
    out[~p_any & ~t_any] = 0.0
    both = (p_any & t_any).nonzero().flatten()
    if both.numel():
        sp = list(spacing) if isinstance(spacing, Sequence) else spacing
        hd = compute_hausdorff_distance(
            p[both].float(), t[both].float(), include_background=True, percentile=95, directed=False, spacing=sp
        )
        out[both] = hd.reshape(-1).float().cpu()
    return out.to(pred.device)


def _check_scores(scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    for name, value in (("scores", scores), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
    if scores.shape != target.shape:
        raise ValueError(
            f"scores and target must have the same shape, got {tuple(scores.shape)} and {tuple(target.shape)}."
        )
    if target.dtype != torch.bool and not torch.all((target == 0) | (target == 1)):
        raise ValueError("target must be binary (values 0 and 1 only).")
    s, t = scores.detach().reshape(-1).double(), target.reshape(-1).bool()
    if mask is not None:
        if not isinstance(mask, torch.Tensor) or mask.shape != scores.shape:
            raise ValueError(f"mask must be a tensor of the scores' shape {tuple(scores.shape)}.")
        keep = mask.reshape(-1) > 0
        s, t = s[keep], t[keep]
    if torch.isnan(s).any():
        raise ValueError("scores contain nan.")
    return s, t


def best_dice(
    scores: torch.Tensor,
    target: torch.Tensor,
    thresholds: Sequence[float] | torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[float, float]:
    """The best Dice a score map reaches over thresholds, pooled over all pixels (Baur et al. 2021's [Dice]).

    A pixel is predicted positive when ``score >= threshold``. Dice is pooled: ``2 TP / (2 TP + FP + FN)`` with
    counts summed over every pixel of every item, not averaged per item. With ``thresholds=None`` every distinct
    score value is tried, plus ``+inf`` (an empty prediction), so the result is the exact maximum; ties among
    thresholds go to the smallest one. If ``target`` has no positive pixel the best is the empty prediction, Dice
    1 at ``+inf`` (the both-empty convention of :func:`dice`). The pooled Dice at one fixed threshold ``t`` is
    ``best_dice(scores, target, [t])``.

    Args:
        scores: anomaly scores of any shape (e.g. ``(B, 1, *spatial)``); higher means more anomalous.
        target: binary ground truth of the same shape.
        thresholds: thresholds to try; ``None`` tries all distinct scores.
        mask: optional mask of the same shape restricting the evaluation (e.g. the brain).

    Returns:
        ``(dice, threshold)`` as Python floats.

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on mismatched shapes, a non-binary target, nan scores, an empty ``thresholds`` or a mask that
            keeps no pixel.
    """
    s, t = _check_scores(scores, target, mask)
    if s.numel() == 0:
        raise ValueError("no pixel to evaluate (empty scores or mask).")
    positives = int(t.sum())
    if thresholds is None:
        order = torch.argsort(s, descending=True)
        s_sorted, t_sorted = s[order], t[order].double()
        tp = torch.cumsum(t_sorted, 0)
        predicted = torch.arange(1, s.numel() + 1, dtype=torch.float64)
        # the last index of each run of equal scores: thresholding at that score includes the whole run
        last = torch.ones_like(s_sorted, dtype=torch.bool)
        last[:-1] = s_sorted[1:] != s_sorted[:-1]
        cand_t, cand_tp, cand_pred = s_sorted[last], tp[last], predicted[last]
    else:
        th = torch.as_tensor(thresholds, dtype=torch.float64).reshape(-1)
        if th.numel() == 0:
            raise ValueError("thresholds must not be empty.")
        above = s[None, :] >= th[:, None] if s.numel() * th.numel() <= 2**26 else None
        if above is not None:
            cand_tp = (above & t[None, :]).sum(1).double()
            cand_pred = above.sum(1).double()
        else:
            cand_tp = torch.stack([((s >= v) & t).sum() for v in th]).double()
            cand_pred = torch.stack([(s >= v).sum() for v in th]).double()
        cand_t = th
    denom = cand_pred + positives
    scores_dice = torch.where(denom > 0, 2 * cand_tp / denom.clamp_min(1), torch.ones_like(denom))
    empty_dice = 1.0 if positives == 0 else 0.0
    if thresholds is None:
        # +inf predicts nothing; prepend it so that ties go to the smallest finite threshold below
        scores_dice = torch.cat([torch.tensor([empty_dice], dtype=torch.float64), scores_dice])
        cand_t = torch.cat([torch.tensor([math.inf], dtype=torch.float64), cand_t])
    best = float(scores_dice.max())
    # among the maximisers, the smallest threshold (candidates are sorted descending when thresholds is None)
    hits = (scores_dice == best).nonzero().flatten()
    idx = int(hits[torch.argmin(cand_t[hits])])
    return best, float(cand_t[idx])


def dice_at_threshold(scores: torch.Tensor, target: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per-item Dice of the binarised score map ``scores >= threshold`` against ``target`` (see :func:`dice`).

    Args:
        scores: ``(B, 1, *spatial)`` anomaly scores.
        target: binary ground truth of the same shape.
        threshold: the decision threshold.

    Returns:
        ``(B,)`` float32 tensor, with :func:`dice`'s empty-mask convention.

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on shapes other than ``(B, 1, *spatial)``, mismatched shapes, non-binary ``target`` or a
            ``threshold`` that is not a number (nan included).
    """
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"scores must be a torch.Tensor, got {type(scores).__name__}.")
    if isinstance(threshold, torch.Tensor) and threshold.numel() == 1:
        threshold = float(threshold)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ValueError(f"threshold must be a number, got {threshold!r}.")
    return dice(scores >= threshold, target)
