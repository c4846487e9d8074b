"""Conditioning for diffusion networks: modes, validation, the explicit null condition and condition dropout.

Conditioning is carried as a mapping with up to three keys, each fed to the network in its own way:

* ``"concat"``: an image of shape (B, C_c, *spatial) concatenated to ``x_t`` along channels;
* ``"crossattn"``: a context of shape (B, L, D) passed as ``context=`` (cross-attention);
* ``"class_label"``: integer class ids of shape (B,) passed as ``class_labels=``;
* ``"seg"``: a label map of shape (B, C_s, *spatial_s) passed as ``seg=`` to MONAI's SPADE networks (its spatial size
  may differ from ``x_t``'s: SPADE resizes it per level); never dropped or guided;

plus ``"classifier_label"`` (B,), read only by :class:`~monai_diffusion.inferers.guidance.ClassifierGuidance` and
never passed to the network. A single tensor with a ``mode`` (``"crossattn"``, ``"concat"``, ``"class_label"``) is
the short form; ``mode="concat_crossattn"`` takes a ``(concat, context)`` pair.

Classifier-free guidance (Ho & Salimans, 2022, "Classifier-Free Diffusion Guidance", Alg. 1) trains one network
conditionally and unconditionally by replacing the condition with a null value with probability ``p_uncond``; the
same null value is used at sampling time. :class:`NullCondition` holds that null explicitly: a null class id, a
(fixed or learned) null context embedding, and/or a fill value for concatenated images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.utils import StrEnum
from torch import nn

__all__ = [
    "ConditionMode",
    "CONDITION_KEYS",
    "as_condition_dict",
    "validate_condition",
    "network_inputs",
    "is_spade",
    "NullCondition",
    "drop_condition",
]


class ConditionMode(StrEnum):
    """How a single conditioning tensor reaches the network."""

    CROSSATTN = "crossattn"
    CONCAT = "concat"
    CLASS_LABEL = "class_label"
    CONCAT_CROSSATTN = "concat_crossattn"


#: keys passed to the network, in the order they are documented
NETWORK_KEYS = ("concat", "crossattn", "class_label", "seg")
#: all keys a conditioning mapping may carry
CONDITION_KEYS = (*NETWORK_KEYS, "classifier_label")


def as_condition_dict(conditioning, mode: str | None = "crossattn") -> dict[str, torch.Tensor]:
    """Normalise conditioning to a ``{key: tensor}`` mapping.

    Args:
        conditioning: ``None``; a tensor interpreted by ``mode``; a ``(concat, context)`` pair for
            ``mode="concat_crossattn"``; or a mapping with keys in :data:`CONDITION_KEYS` (``mode`` is then ignored).
        mode: one of :class:`ConditionMode`.

    Returns:
        A new dict (the input is not modified).

    Raises:
        ValueError: unknown mode, unknown keys, or a form that does not fit the mode.
        TypeError: a conditioning value that is not a tensor.
    """
    if conditioning is None:
        return {}
    if isinstance(conditioning, Mapping):
        unknown = set(conditioning) - set(CONDITION_KEYS)
        if unknown:
            raise ValueError(f"unknown conditioning keys {sorted(unknown)}; expected a subset of {CONDITION_KEYS}")
        out = {k: v for k, v in conditioning.items() if v is not None}
    else:
        modes = [m.value for m in ConditionMode]
        if mode not in modes:
            raise ValueError(f"unknown conditioning mode {mode!r}; expected one of {modes}")
        if mode == ConditionMode.CONCAT_CROSSATTN:
            if (
                isinstance(conditioning, torch.Tensor)
                or not isinstance(conditioning, Sequence)
                or len(conditioning) != 2
            ):
                raise ValueError(
                    "mode 'concat_crossattn' expects a (concat_image, context) pair or a mapping with keys "
                    f"'concat' and 'crossattn', got {type(conditioning).__name__}"
                )
            out = {"concat": conditioning[0], "crossattn": conditioning[1]}
        else:
            out = {str(mode): conditioning}
    for key, value in out.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"conditioning {key!r} must be a torch.Tensor, got {type(value).__name__}")
    return out


def _expand_batch(value: torch.Tensor, batch: int, key: str) -> torch.Tensor:
    if value.shape[0] == batch:
        return value
    if value.shape[0] == 1:
        return value.expand(batch, *value.shape[1:])
    raise ValueError(f"conditioning {key!r} has batch size {value.shape[0]}, expected {batch} (or 1)")


def validate_condition(cond: Mapping[str, torch.Tensor], x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Check conditioning shapes against ``x`` (B, C, *spatial) and broadcast batch-1 or scalar entries.

    Raises:
        ValueError: with the expected and the received shape when a tensor does not fit.
        TypeError: class labels that are not integers.
    """
    batch = x.shape[0]
    out: dict[str, torch.Tensor] = {}
    for key, value in cond.items():
        if key == "concat":
            if value.ndim != x.ndim or tuple(value.shape[2:]) != tuple(x.shape[2:]):
                raise ValueError(
                    f"'concat' conditioning must have shape (B, C, {', '.join(map(str, x.shape[2:]))}) to match the "
                    f"input {tuple(x.shape)}, got {tuple(value.shape)}"
                )
            out[key] = _expand_batch(value.to(device=x.device, dtype=x.dtype), batch, key)
        elif key == "crossattn":
            if value.ndim != 3:
                raise ValueError(f"'crossattn' context must have shape (B, L, D), got {tuple(value.shape)}")
            out[key] = _expand_batch(value.to(device=x.device, dtype=x.dtype), batch, key)
        elif key == "seg":
            if not isinstance(value, torch.Tensor) or value.ndim != x.ndim:
                raise ValueError(
                    f"'seg' must be a label map (B, C, *spatial) with {x.ndim - 2} spatial dimensions, got "
                    f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}"
                )
            out[key] = _expand_batch(value.to(device=x.device), batch, key)
        elif key in ("class_label", "classifier_label"):
            if value.is_floating_point() or value.is_complex():
                raise TypeError(f"{key!r} must hold integer class ids, got dtype {value.dtype}")
            v = value.to(x.device)
            if v.ndim == 0:
                v = v.reshape(1)
            if v.ndim != 1:
                raise ValueError(f"{key!r} must have shape (B,) or be a scalar, got {tuple(value.shape)}")
            out[key] = _expand_batch(v.long(), batch, key)
        else:
            raise ValueError(f"unknown conditioning key {key!r}; expected a subset of {CONDITION_KEYS}")
    return out


def network_inputs(x: torch.Tensor, cond: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Turn ``x_t`` and validated conditioning into a MONAI ``DiffusionModelUNet`` call: ``(x_in, kwargs)``."""
    x_in = torch.cat([x, cond["concat"]], dim=1) if "concat" in cond else x
    kwargs: dict[str, torch.Tensor] = {}
    if "crossattn" in cond:
        kwargs["context"] = cond["crossattn"]
    if "class_label" in cond:
        kwargs["class_labels"] = cond["class_label"]
    if "seg" in cond:
        kwargs["seg"] = cond["seg"]
    return x_in, kwargs


def is_spade(model) -> bool:
    """Whether ``model`` is (or wraps) one of MONAI's SPADE networks, which take a label map ``seg=``."""
    if not isinstance(model, nn.Module):
        return False
    return any(type(m).__name__.startswith("SPADE") for m in model.modules())


class NullCondition(nn.Module):
    """The explicit "no condition" used for condition dropout in training and for classifier-free guidance.

    Only the keys given a null value here are ever dropped or guided; other keys (for instance an image that
    is always concatenated) pass through unchanged.

    Args:
        class_label: the null class id (commonly ``num_classes``, with ``num_class_embeds = num_classes + 1``).
        context: a fixed null context of shape (L, D) (e.g. zeros, or the embedding of an empty prompt).
        context_shape: ``(L, D)`` of a *learned* null context, initialised to zeros; train it with the network
            (add ``null_condition.parameters()`` to the optimiser).
        fill_value: the value that replaces a concatenated image.

    Raises:
        ValueError: if no null value is given, or both ``context`` and ``context_shape``.
    """

    def __init__(
        self,
        class_label: int | None = None,
        context: torch.Tensor | Sequence | None = None,
        context_shape: Sequence[int] | None = None,
        fill_value: float | None = None,
    ) -> None:
        super().__init__()
        if class_label is None and context is None and context_shape is None and fill_value is None:
            raise ValueError("NullCondition needs at least one of class_label, context, context_shape, fill_value")
        if context is not None and context_shape is not None:
            raise ValueError("give either a fixed `context` or a learned `context_shape`, not both")
        if class_label is not None and (isinstance(class_label, bool) or int(class_label) < 0):
            raise ValueError(f"class_label must be a non-negative class id, got {class_label!r}")
        self.class_label = None if class_label is None else int(class_label)
        self.fill_value = None if fill_value is None else float(fill_value)
        self.context: torch.Tensor | None
        if context is not None:
            ctx = torch.as_tensor(context, dtype=torch.float32)
            if ctx.ndim != 2:
                raise ValueError(f"null context must have shape (L, D), got {tuple(ctx.shape)}")
            self.register_buffer("context", ctx)
        elif context_shape is not None:
            if len(context_shape) != 2:
                raise ValueError(f"context_shape must be (L, D), got {tuple(context_shape)}")
            self.context = nn.Parameter(torch.zeros(*[int(v) for v in context_shape]))
        else:
            self.context = None

    @property
    def keys(self) -> tuple[str, ...]:
        """The conditioning keys this null condition can replace."""
        keys = []
        if self.fill_value is not None:
            keys.append("concat")
        if self.context is not None:
            keys.append("crossattn")
        if self.class_label is not None:
            keys.append("class_label")
        return tuple(keys)

    def null_like(self, cond: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The null version of validated conditioning ``cond`` (keys without a null value are kept).

        Raises:
            ValueError: if ``cond`` carries none of the keys this null condition replaces (guidance or dropout
                would then silently do nothing), or a context whose shape differs from the null context.
        """
        network_keys = [k for k in cond if k in NETWORK_KEYS]
        if not any(k in self.keys for k in network_keys):
            raise ValueError(
                f"missing null condition: conditioning has keys {network_keys} but the null condition only defines "
                f"{list(self.keys)}"
            )
        out = dict(cond)
        for key in network_keys:
            value = cond[key]
            if key == "concat" and self.fill_value is not None:
                out[key] = torch.full_like(value, self.fill_value)
            elif key == "crossattn" and self.context is not None:
                if tuple(self.context.shape) != tuple(value.shape[1:]):
                    raise ValueError(
                        f"null context has shape {tuple(self.context.shape)} but the context is {tuple(value.shape[1:])}"
                    )
                out[key] = self.context.to(device=value.device, dtype=value.dtype).expand_as(value)
            elif key == "class_label" and self.class_label is not None:
                out[key] = torch.full_like(value, self.class_label)
        return out


def drop_condition(
    cond: Mapping[str, torch.Tensor],
    null_condition: NullCondition,
    probability: float,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Replace the condition of each sample by the null condition with ``probability`` (Ho & Salimans, Alg. 1).

    All keys of one sample are dropped together, so the network learns ``p(x)`` and ``p(x | c)``.

    Args:
        cond: validated conditioning (batch-first tensors).
        null_condition: the null values.
        probability: ``p_uncond`` in [0, 1].
        generator: optional generator (on the conditioning's device) for the per-sample draws.
    """
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"condition dropout probability must be in [0, 1], got {probability}")
    if not cond or probability == 0.0:
        return dict(cond)
    null = null_condition.null_like(cond)
    first = next(iter(cond.values()))
    batch = first.shape[0]
    device = generator.device if generator is not None else first.device
    drop = (torch.rand(batch, generator=generator, device=device) < probability).to(first.device)
    out = {}
    for key, value in cond.items():
        mask = drop.reshape(-1, *([1] * (value.ndim - 1)))
        out[key] = torch.where(mask, null[key], value)
    return out
