"""Small ignite handlers for long CPU training runs: a CSV training log and a tqdm progress bar with the loss."""

from __future__ import annotations

import csv
import math
import os
import time
from pathlib import Path

__all__ = ["TrainingLog", "ProgressBar"]


def _loss_of(output) -> float:
    value = output["loss"] if isinstance(output, dict) else output
    if isinstance(value, (list, tuple)):
        value = value[0]
    return float(value.item() if hasattr(value, "item") else value)


class TrainingLog:
    """Append ``iteration, loss, wall seconds`` to a CSV every ``every`` iterations (resumed runs keep appending).

    The loss is the mean over the ``every`` iterations since the last row; wall seconds count this process only
    (``elapsed_s``) and, across resumed runs, add up in ``total_s``. A non-finite loss stops the run with an error
    that names the iteration, before anything non-finite is checkpointed at the next save.

    Args:
        path: the CSV file.
        every: iterations between rows.
    """

    def __init__(self, path: str | os.PathLike, every: int = 50) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.path = Path(path)
        self.every = int(every)
        self._sum = 0.0
        self._count = 0
        self._start = time.time()
        self._offset = 0.0

    def attach(self, engine) -> None:
        from ignite.engine import Events

        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            with open(self.path) as f:
                rows = list(csv.DictReader(f))
            if rows:
                self._offset = float(rows[-1]["total_s"])
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)

    def _started(self, engine) -> None:
        self._start = time.time()

    def _iteration(self, engine) -> None:
        loss = _loss_of(engine.state.output)
        if not math.isfinite(loss):
            engine.terminate()
            raise FloatingPointError(f"non-finite training loss {loss} at iteration {engine.state.iteration}")
        self._sum += loss
        self._count += 1
        if engine.state.iteration % self.every:
            return
        new = not self.path.is_file()
        elapsed = time.time() - self._start
        with open(self.path, "a", newline="") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["iteration", "loss", "elapsed_s", "total_s"])
            row = [engine.state.iteration, self._sum / self._count, elapsed, self._offset + elapsed]
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        self._sum, self._count = 0.0, 0


class ProgressBar:
    """A tqdm bar over the run's iterations with the running loss (ignite's ``ProgressBar`` restarts every epoch).

    Args:
        desc: the bar's label.
        disable: no bar (e.g. when the output is not a terminal).
    """

    def __init__(self, desc: str = "train", disable: bool = False) -> None:
        self.desc = desc
        self.disable = disable
        self._bar = None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._close)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._fail)

    def _open(self, engine) -> None:
        from tqdm.auto import tqdm

        # opened at the first completed iteration, after a resumed run's checkpoint has set the iteration count
        total = engine.state.max_epochs * (engine.state.epoch_length or 0)
        self._bar = tqdm(
            total=total, initial=engine.state.iteration - 1, desc=self.desc, disable=self.disable, mininterval=5.0
        )

    def _update(self, engine) -> None:
        if self._bar is None:
            self._open(engine)
        assert self._bar is not None
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{_loss_of(engine.state.output):.4f}", refresh=False)

    def close(self) -> None:
        """Close the bar (done at ``COMPLETED`` and on an exception; safe to call again)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _close(self, engine) -> None:
        self.close()

    def _fail(self, engine, err) -> None:
        self.close()
        raise err
