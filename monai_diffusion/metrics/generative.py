"""Metrics for sets of generated images: sample diversity (MS-SSIM) and feature distances (FID, KID).

* :func:`ms_ssim_diversity`: the mean MS-SSIM (Wang, Simoncelli & Bovik, Asilomar 2003) between random pairs of
  generated images, with MONAI's ``MultiScaleSSIMMetric``; lower means more diverse.
* :func:`frechet_distance`: the Frechet distance between Gaussians fitted to two feature sets (Heusel et al., NeurIPS
  2017, "GANs trained by a two time-scale update rule ...", Sec. "Frechet Inception Distance") with MONAI's
  ``FIDMetric``.
* :func:`kernel_inception_distance`: the unbiased MMD^2 estimate (Gretton et al., JMLR 13:723-773, 2012) with the
  cubic polynomial kernel of the kernel inception distance (Binkowski et al., ICLR 2018, "Demystifying MMD GANs",
  Sec. 4), averaged over random subsets.

Features come from :func:`monai_diffusion.metrics.extract_features` (a network trained on this project's data, not
Inception; see ``docs/feature_network.md``), so FID/KID values are comparable only within this project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.metrics import FIDMetric, MultiScaleSSIMMetric

__all__ = ["ms_ssim_settings", "ms_ssim_diversity", "frechet_distance", "kernel_inception_distance"]

#: MS-SSIM scale weights of Wang et al. (2003) for 5 scales, finest first
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_settings(
    spatial_shape: Sequence[int], kernel_size: int | None = None, scales: int | None = None
) -> tuple[int, tuple[float, ...]]:
    """Window size and scale weights of MS-SSIM that fit images of ``spatial_shape``.

    The standard MS-SSIM (5 scales, 11-pixel window) needs at least 176 pixels a side in MONAI (its check is
    ``side // (scales - 1)^2 > kernel_size - 1``). Smaller images, such as the 64 x 64 slices of the embedded data,
    get a 7-pixel window (sigma 1.5, as ever) and as many scales (at most 5) as keep the coarsest scale at least
    twice the window, i.e. 14 pixels a side: 64 x 64 gets 3 scales (64, 32, 16), 32 x 32 gets 2, 16 x 16 gets 1
    (plain SSIM). The weights are the first ``scales`` of Wang et al.'s five, rescaled to sum to 1.

    Args:
        spatial_shape: the image's spatial sides.
        kernel_size: force this odd window size (``scales`` is then chosen for it unless given).
        scales: force this number of scales (1 to 5).

    Returns:
        ``(kernel_size, weights)``.

    Raises:
        ValueError: if the images are too small for the window (or for the forced settings).
    """
    side = min(int(s) for s in spatial_shape)
    if kernel_size is None and scales is None and side >= 176:
        return 11, MS_SSIM_WEIGHTS
    k = 7 if kernel_size is None else int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size!r}.")
    if scales is None:
        n = 0
        while n < 5 and side / 2**n >= 2 * k:
            n += 1
        if n == 0:
            raise ValueError(
                f"images of side {side} are too small for MS-SSIM with a {k}-pixel window (need >= {2 * k}); "
                "pass a smaller kernel_size."
            )
    else:
        n = int(scales)
        if not 1 <= n <= 5:
            raise ValueError(f"scales must be in 1..5, got {scales!r}.")
    if side // max(1, n - 1) ** 2 <= k - 1 or side / 2 ** (n - 1) < k:
        raise ValueError(f"images of side {side} are too small for {n} scales with a {k}-pixel window.")
    w = MS_SSIM_WEIGHTS[:n]
    total = sum(w)
    return k, tuple(x / total for x in w)


def ms_ssim_diversity(
    images: torch.Tensor,
    pairs: int | None = None,
    generator: torch.Generator | None = None,
    data_range: float = 2.0,
    kernel_size: int | None = None,
    scales: int | None = None,
    batch_size: int = 64,
) -> float:
    """Mean MS-SSIM between pairs of distinct images of a set (lower means a more diverse set).

    MONAI's ``MultiScaleSSIMMetric`` with a Gaussian window (sigma 1.5), the window size and scales chosen by
    :func:`ms_ssim_settings` for the image size unless given. A set of copies of one image scores 1.

    Args:
        images: ``(N, C, *spatial)`` generated images, 2D or 3D, ``N >= 2``.
        pairs: number of random pairs ``(i, j)``, ``i != j``, drawn uniformly with replacement; ``None`` uses
            every unordered pair once (``N (N - 1) / 2`` pairs: deterministic, but quadratic in ``N``).
        generator: CPU generator for the pairs (ignored when ``pairs`` is ``None``).
        data_range: intensity range of the images: 2.0 for the [-1, 1] images the diffusion models produce, 1.0
            for [0, 1].
        kernel_size: force the window size (see :func:`ms_ssim_settings`).
        scales: force the number of scales (see :func:`ms_ssim_settings`).
        batch_size: pairs per MONAI call.

    Returns:
        The mean MS-SSIM as a Python float.

    Raises:
        TypeError: if ``images`` is not a tensor.
        ValueError: on fewer than 2 images, a bad shape, ``pairs``, ``data_range`` or ``batch_size``, or images too
            small for MS-SSIM.
    """
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    if images.ndim not in (4, 5) or images.shape[0] < 2:
        raise ValueError(f"images must be (N >= 2, C, *spatial) in 2D or 3D, got shape {tuple(images.shape)}.")
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
        raise ValueError(f"data_range must be a positive number, got {data_range!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    n = images.shape[0]
    if pairs is None:
        i, j = torch.triu_indices(n, n, offset=1)
    else:
        if isinstance(pairs, bool) or not isinstance(pairs, int) or pairs < 1:
            raise ValueError(f"pairs must be a positive integer or None, got {pairs!r}.")
        i = torch.randint(0, n, (pairs,), generator=generator)
        j = torch.randint(0, n - 1, (pairs,), generator=generator)
        j = j + (j >= i).long()  # uniform over the n - 1 other images
    spatial_dims = images.ndim - 2
    k, weights = ms_ssim_settings(images.shape[2:], kernel_size, scales)
    metric = MultiScaleSSIMMetric(
        spatial_dims=spatial_dims, data_range=float(data_range), kernel_size=k, kernel_sigma=1.5, weights=weights
    )
    x = images.detach().float()
    total, count = 0.0, 0
    for start in range(0, i.numel(), batch_size):
        a, b = i[start : start + batch_size], j[start : start + batch_size]
        values = torch.as_tensor(metric(x[a.to(x.device)], x[b.to(x.device)]))
        total += float(values.double().sum())
        count += a.numel()
    return total / count


def _check_features(feats_a: torch.Tensor, feats_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, value in (("feats_a", feats_a), ("feats_b", feats_b)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}.")
        if value.ndim != 2 or value.shape[0] < 2:
            raise ValueError(f"{name} must be (N >= 2, D) feature vectors, got shape {tuple(value.shape)}.")
        if not torch.isfinite(value).all():
            raise ValueError(f"{name} contains non-finite values.")
    if feats_a.shape[1] != feats_b.shape[1]:
        raise ValueError(f"feature dimensions differ: {feats_a.shape[1]} and {feats_b.shape[1]}.")
    return feats_a.detach().double().cpu(), feats_b.detach().double().cpu()


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (FID when the features are Inception's).

    ``||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` (Heusel et al. 2017), with sample means and
    unbiased covariances, by MONAI's ``FIDMetric`` (float64; ``scipy.linalg.sqrtm``). The estimate is biased
    upwards for small sets (Chong & Forsyth, CVPR 2020); compare values computed with equal set sizes. With fewer
    samples than feature dimensions the covariances are singular and MONAI adds 1e-6 to their diagonals.

    Args:
        feats_a: ``(N_a, D)`` features of one set (e.g. generated images).
        feats_b: ``(N_b, D)`` features of the other (e.g. real images).

    Returns:
        The distance as a Python float (>= 0 up to round-off).

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on shapes other than ``(N >= 2, D)``, different ``D`` or non-finite values.
    """
    a, b = _check_features(feats_a, feats_b)
    return float(FIDMetric()(a, b))


def _polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``k(x, y) = (x . y / d + 1)^3`` for all pairs of rows (Binkowski et al. 2018, Sec. 4)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 of two equally sized samples (Gretton et al. 2012, the U-statistic estimator)."""
    m = x.shape[0]
    k_xx, k_yy, k_xy = _polynomial_kernel(x, x), _polynomial_kernel(y, y), _polynomial_kernel(x, y)
    off_diag = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return off_diag - 2.0 * k_xy.mean()


def kernel_inception_distance(
    feats_a: torch.Tensor,
    feats_b: torch.Tensor,
    subsets: int = 100,
    subset_size: int | None = None,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Kernel distance (KID): unbiased MMD^2 with the cubic polynomial kernel, mean and std over random subsets.

    Binkowski et al. (ICLR 2018): ``k(x, y) = (x . y / d + 1)^3`` and, for subsets ``X``, ``Y`` of ``m`` rows each,
    ``MMD^2_u = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2``.
    Each subset draws ``m`` rows of each set without replacement. The estimate is unbiased, so for two samples of
    one distribution it scatters around 0 and can be negative; its mean over subsets does not depend on the set
    sizes the way FID does.

    Args:
        feats_a: ``(N_a, D)`` features of one set.
        feats_b: ``(N_b, D)`` features of the other.
        subsets: number of random subsets.
        subset_size: rows per subset ``m``; ``None`` uses 1000 (Binkowski et al.'s choice) when both sets have at
            least 2000 rows, else half the smaller set, so that subsets differ and the std is informative.
        generator: CPU generator for the subsets.

    Returns:
        ``(mean, std)`` over the subsets as Python floats (std 0 for one subset).

    Raises:
        TypeError: if an input is not a tensor.
        ValueError: on bad features (see :func:`frechet_distance`), ``subsets < 1``, or a ``subset_size`` below 2
            or above either set size.
    """
    a, b = _check_features(feats_a, feats_b)
    if isinstance(subsets, bool) or not isinstance(subsets, int) or subsets < 1:
        raise ValueError(f"subsets must be a positive integer, got {subsets!r}.")
    n_max = min(a.shape[0], b.shape[0])
    m = min(1000, max(2, n_max // 2)) if subset_size is None else subset_size
    if isinstance(m, bool) or not isinstance(m, int) or not 2 <= m <= n_max:
        raise ValueError(f"subset_size must be an integer in [2, {n_max}] (the smaller set size), got {subset_size!r}.")
    values = torch.empty(subsets, dtype=torch.float64)
    for s in range(subsets):
        ia = torch.randperm(a.shape[0], generator=generator)[:m]
        ib = torch.randperm(b.shape[0], generator=generator)[:m]
        values[s] = _mmd2_unbiased(a[ia], b[ib])
    std = float(values.std(unbiased=True)) if subsets > 1 else 0.0
    return float(values.mean()), std if math.isfinite(std) else 0.0
