"""Checkpoints of the training recipes: finding the newest readable one, saving on MONAI's ``CheckpointSaver`` so that
resumed runs stay tidy, recording how to rebuild the network, and building it again.

A checkpoint of :mod:`monai_diffusion.engines.recipes` is MONAI's: one ``torch.save`` of a dict whose entries are the
``state_dict`` of each saved object (``network``, ``optimizer``, ``ema``, ``trainer``, ...), loadable with
``torch.load(path, weights_only=True)``. With ``config=`` the recipes add an entry ``config``, a JSON-like dict that
says how to rebuild what was trained, in MONAI bundle syntax so that ``monai.bundle.ConfigParser`` can also build it::

    {"kind": "diffusion",                      # or "autoencoder"
     "written_by": "monai-diffusion train diffusion", "arguments": {...},    # provenance
     "network": {"_target_": "monai.networks.nets.DiffusionModelUNet", "spatial_dims": 2, ...},
     "scheduler": {"_target_": "monai_diffusion.networks.schedulers.DDPMScheduler", "num_train_timesteps": 1000},
     "image": {"spatial_size": [32, 32], "channels": 1, "intensity_range": [-1.0, 1.0], "key": "t1w"},
     "condition": {"class_label": "healthy", "num_classes": 3, "null_class_label": 2}}   # when conditional

:func:`build_component` rebuilds an entry by plain import, without evaluating anything, and only from the
``monai`` and ``monai_diffusion`` packages: a checkpoint is data and must not choose arbitrary code to run.
"""

from __future__ import annotations

import copy
import importlib
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointSaver

__all__ = [
    "ALLOWED_PACKAGES",
    "RecordedConfig",
    "ResumableCheckpointSaver",
    "build_component",
    "check_resume_config",
    "checkpoint_config",
    "checkpoint_iteration",
    "latest_checkpoint",
    "readable_checkpoint",
]

#: packages whose classes :func:`build_component` may instantiate from a recorded configuration
ALLOWED_PACKAGES: tuple[str, ...] = ("monai", "monai_diffusion")


def checkpoint_iteration(path: str | Path) -> int:
    """The ``N`` of ``...iteration=N.pt`` in a checkpoint's file name (MONAI ``CheckpointSaver`` naming), else -1."""
    m = re.search(r"iteration=(\d+)", Path(path).name)
    return int(m.group(1)) if m else -1


def readable_checkpoint(path: str | Path) -> bool:
    """Whether ``torch.load(path, weights_only=True)`` succeeds (a run killed while saving leaves a truncated file)."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated zip, bad pickle, empty file: every kind of unreadable
        return False
    return True


def latest_checkpoint(checkpoint_dir: str | Path | None, verify: bool = True) -> Path | None:
    """The readable checkpoint with the largest ``iteration=N`` in its name (MONAI ``CheckpointSaver`` naming).

    With ``verify``, a newer file that cannot be loaded is skipped with a warning naming it, and the newest good one
    is returned (``None`` when there is none).
    """
    if checkpoint_dir is None or not Path(checkpoint_dir).is_dir():
        return None
    paths = sorted(Path(checkpoint_dir).glob("*.pt"), key=lambda p: (checkpoint_iteration(p), "final" in p.name))
    for path in reversed(paths):  # newest first; of two files of one iteration, the final one
        if not verify or readable_checkpoint(path):
            return path
        warnings.warn(
            f"checkpoint {path} cannot be read (truncated or corrupt); falling back to an older one", stacklevel=2
        )
    return None


def checkpoint_config(path: str | Path) -> dict[str, Any] | None:
    """The configuration recorded in a checkpoint (see the module docs), or ``None`` when it records none.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file ``torch.load(weights_only=True)`` cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(
            f"cannot read checkpoint {str(path)!r} (truncated, or not a PyTorch checkpoint): {err}"
        ) from None
    config = checkpoint.get("config") if isinstance(checkpoint, Mapping) else None
    return dict(config) if isinstance(config, Mapping) else None


def check_resume_config(checkpoint: str | Path, config: Mapping[str, Any]) -> None:
    """Refuse to resume from ``checkpoint`` when its recorded ``kind``, ``network`` or ``scheduler`` differ from
    ``config`` (a checkpoint without a recorded configuration is accepted).

    Raises:
        ValueError: naming the entries that differ and both values.
    """
    recorded = checkpoint_config(checkpoint)
    if recorded is None:
        return
    differ = RecordedConfig(recorded).differences(config, ("kind", "network", "scheduler"))
    if differ:
        now = _plain(dict(config), "config")
        details = []
        for key in differ:
            old, new = recorded[key], now[key]
            if isinstance(old, dict) and isinstance(new, dict):
                changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
                details += [f"{key}.{k}: checkpoint {old.get(k)!r}, now {new.get(k)!r}" for k in changed]
            else:
                details.append(f"{key}: checkpoint {old!r}, now {new!r}")
        raise ValueError(
            f"cannot resume from {checkpoint}: it was trained with another {' and '.join(differ)} "
            f"({'; '.join(details)}); use another checkpoint folder, or the arguments that wrote it"
        )


def _plain(value: Any, where: str) -> Any:
    """A deep copy of ``value`` made of dicts with string keys, lists, str, int, float, bool and None (tuples become
    lists), so that it survives ``torch.load(weights_only=True)`` and JSON alike."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"config keys must be strings, got {k!r} at {where}")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"config values must be JSON-like (dict, list, str, number, bool, None); got {type(value)} at {where}"
    )


class RecordedConfig:
    """A JSON-like dict saved in checkpoints next to the weights (its ``state_dict`` is the dict itself).

    Give it to MONAI's ``CheckpointSaver`` in ``save_dict``; it is not meant for ``CheckpointLoader`` (the running
    code builds its own configuration; compare it with :meth:`differences`).

    Args:
        config: the dict, e.g. ``{"network": {"_target_": ..., ...}, "scheduler": {...}}``.

    Raises:
        TypeError: a value that is not JSON-like.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config: dict[str, Any] = _plain(dict(config), "config")

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.config)

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self.config = _plain(dict(state_dict), "config")

    def differences(self, other: Mapping[str, Any], keys: tuple[str, ...] = ("network", "scheduler")) -> list[str]:
        """The ``keys`` whose entries differ between this configuration and ``other`` (a key missing on either side is
        not compared)."""
        other = _plain(dict(other), "config")
        return [k for k in keys if k in self.config and k in other and self.config[k] != other[k]]


def build_component(config: Mapping[str, Any], allowed: tuple[str, ...] = ALLOWED_PACKAGES) -> Any:
    """Instantiate ``{"_target_": "package.module.Class", **kwargs}`` by plain import (no expression evaluation).

    Args:
        config: a recorded entry such as ``config["network"]``.
        allowed: top-level packages the target may come from.

    Returns:
        ``Class(**kwargs)``.

    Raises:
        ValueError: no ``_target_``, a target outside ``allowed``, one that does not exist, or arguments starting
            with ``$``/``@``/``%`` (bundle expressions and references, which a checkpoint may not hold).
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("_target_"), str):
        raise ValueError(f"expected a mapping with a '_target_' class path, got {config!r}")
    target = config["_target_"]
    if target.split(".")[0] not in allowed:
        raise ValueError(f"refusing to build {target!r} from a checkpoint: only classes of {list(allowed)} are built")
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    for k, v in kwargs.items():
        if k.startswith("_") or (isinstance(v, str) and v[:1] in "$@%"):
            raise ValueError(f"argument {k!r}={v!r} of {target!r}: bundle expressions and references are not built")
    module_name, _, name = target.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"cannot import {target!r} recorded in the checkpoint: {err}") from None
    return cls(**kwargs)


class ResumableCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` (iteration level, with a final checkpoint) for runs that resume in one folder.

    Differences from the parent, all about runs that stop early or continue in a later process:

    * The final checkpoint (``checkpoint_final_iteration=N.pt``, on completion, on ``terminate()`` and on an
      exception) is written only when iteration ``N`` completed (every handler of ``ITERATION_COMPLETED`` ran, so
      weights, optimiser, EMA and the iteration count agree) and when this run completed at least one iteration. An
      exception or ``KeyboardInterrupt`` in the middle of a step, a ``terminate()`` from ``ITERATION_STARTED``
      (where ignite has counted an iteration it never runs) and a run with nothing left to do leave no final
      checkpoint; the last periodic one (or the previous run's) is the state to resume from.
    * After every save, checkpoints of the same naming in ``save_dir`` beyond the ``n_saved`` newest iterations
      (final and periodic together; the file just written is kept, and replaces any other file of its iteration)
      are removed, including those earlier processes wrote, which the parent does not know. Older files go only
      after the new one is complete. Newer files (a later run's, with ``resume=False``) are kept unless they cannot
      be read.

    Args:
        save_dir: the checkpoint folder.
        save_dict: objects to save (``state_dict`` each).
        save_interval: iterations between periodic checkpoints (0: final checkpoint only).
        n_saved: checkpoints to keep in the folder (``None``: all).
        file_prefix: as for ``CheckpointSaver``.
    """

    def __init__(
        self,
        save_dir: str | Path,
        save_dict: dict,
        save_interval: int = 0,
        n_saved: int | None = 1,
        file_prefix: str = "",
    ) -> None:
        if n_saved is not None and n_saved < 1:
            raise ValueError(f"n_saved must be >= 1 or None, got {n_saved}")
        # the parent keeps every file; _prune removes old ones once a new file is complete
        super().__init__(
            save_dir=str(save_dir),
            save_dict=save_dict,
            file_prefix=file_prefix,
            save_final=True,
            epoch_level=False,
            save_interval=save_interval,
            n_saved=None,
        )
        self.keep = n_saved
        name = "checkpoint" if len(save_dict) > 1 else next(iter(save_dict))
        stem = f"{file_prefix}_{name}" if file_prefix else name
        self._pattern = re.compile(rf"^{re.escape(stem)}_(final_)?iteration=(\d+)\.pt$")
        self._completed: int | None = None

    def attach(self, engine: Engine) -> None:
        super().attach(engine)
        # registered after the parent's handlers (and after a CheckpointLoader attached before this saver)
        engine.add_event_handler(Events.STARTED, self._run_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)

    def _run_started(self, engine: Engine) -> None:
        self._completed = None

    def _iteration_completed(self, engine: Engine) -> None:
        self._completed = engine.state.iteration

    def _final_is_safe(self, engine: Engine, why: str) -> bool:
        if self._completed is not None and self._completed == engine.state.iteration:
            return True
        if self._completed is None:
            reason = "no iteration completed in this run"
        else:
            reason = f"iteration {engine.state.iteration} did not complete (the last complete one is {self._completed})"
        self.logger.info(f"{why}: no final checkpoint written, {reason}")
        return False

    def completed(self, engine: Engine) -> None:
        if self._final_is_safe(engine, "run ended"):
            super().completed(engine)
            self._prune(self._final_checkpoint)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        if not self._final_is_safe(engine, f"exception {type(e).__name__}"):
            raise e
        try:
            super().exception_raised(engine, e)  # saves, then raises e
        finally:
            self._prune(self._final_checkpoint)

    def interval_completed(self, engine: Engine) -> None:
        super().interval_completed(engine)
        self._prune(self._interval_checkpoint)

    def _prune(self, saver: Any) -> None:
        """Remove old checkpoints beyond ``n_saved`` once ``saver`` (the parent's interval or final ignite
        ``Checkpoint``) has written its newest file (see the class docs); only on the rank that saves."""
        import ignite.distributed as idist

        written = None if saver is None else saver.last_checkpoint
        if self.keep is None or written is None or idist.get_rank() != 0:
            return
        ours = []
        for path in Path(self.save_dir).iterdir():
            m = self._pattern.match(path.name)
            if m is not None:
                ours.append((int(m.group(2)), m.group(1) is not None, path))
        written = Path(written)
        current = next((it for it, _, path in ours if path.name == written.name), None)
        if current is None:
            return
        # another file of the same iteration (the periodic one when the final is written) holds the same state
        removed = [path for it, _, path in ours if it == current and path.name != written.name]
        older = sorted((item for item in ours if item[0] < current), reverse=True)
        removed += [path for _, _, path in older[self.keep - 1 :]]
        removed += [path for it, _, path in ours if it > current and not readable_checkpoint(path)]
        gone = set()
        for path in removed:
            try:
                path.unlink()
            except OSError as err:
                warnings.warn(f"could not remove the old checkpoint {path}: {err}", stacklevel=2)
                continue
            gone.add(path.name)
            self.logger.info(f"removed old checkpoint {path}")
        # keep the parent's ignite records of the files it wrote in step with the folder (public state_dict API)
        for checkpoint in (self._interval_checkpoint, self._final_checkpoint):
            if checkpoint is not None:
                state = checkpoint.state_dict()
                checkpoint.load_state_dict({k: [(p, f) for p, f in v if f not in gone] for k, v in state.items()})
