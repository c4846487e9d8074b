"""Metrics used by benchmarks and bundles, one file per family (see ``docs/metrics.md``).

* ``image``: PSNR and SSIM inside a mask (e.g. the brain), per batch item.
* ``segmentation``: Dice and HD95 of binary masks with an explicit empty-mask convention; best Dice over thresholds.
* ``detection``: AUROC and AUPRC (average precision) of anomaly scores.
* ``generative``: MS-SSIM diversity of a generated set; Frechet distance and kernel (KID) distance of feature sets.
* ``features``: ``BrainFeatureNet``, a small network trained on the embedded data whose features feed FID/KID
  (not ImageNet/RadImageNet features; see ``docs/feature_network.md``).

Exports use the explicit ``import X as X`` form, one per line."""

from __future__ import annotations

from .detection import auprc as auprc
from .detection import auroc as auroc
from .features import CONTRAST_CLASSES as CONTRAST_CLASSES
from .features import DEFAULT_WEIGHTS as DEFAULT_WEIGHTS
from .features import FEATURE_DIM as FEATURE_DIM
from .features import TISSUE_CLASSES as TISSUE_CLASSES
from .features import BrainFeatureNet as BrainFeatureNet
from .features import FeatureNetLoss as FeatureNetLoss
from .features import FeatureNetPrepareBatch as FeatureNetPrepareBatch
from .features import evaluate_feature_network as evaluate_feature_network
from .features import extract_features as extract_features
from .features import load_feature_network as load_feature_network
from .features import load_feature_set as load_feature_set
from .features import predict_contrast_and_tissue as predict_contrast_and_tissue
from .features import tissue_fractions as tissue_fractions
from .features import train_feature_network as train_feature_network
from .generative import frechet_distance as frechet_distance
from .generative import kernel_inception_distance as kernel_inception_distance
from .generative import ms_ssim_diversity as ms_ssim_diversity
from .generative import ms_ssim_settings as ms_ssim_settings
from .image import masked_mse as masked_mse
from .image import masked_psnr as masked_psnr
from .image import masked_ssim as masked_ssim
from .segmentation import best_dice as best_dice
from .segmentation import dice as dice
from .segmentation import dice_at_threshold as dice_at_threshold
from .segmentation import hd95 as hd95
