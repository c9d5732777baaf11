"""Where metrics go: ``metrics.jsonl`` in the run directory (always: plots, resumes and benchmarks read
it), plus TensorBoard event files and Weights & Biases runs when ``train.loggers`` names them.

Both tasks (pretraining and fine-tuning) log through :class:`MetricsWriter`; only the main process writes.
W&B runs offline by default (``train.wandb_mode``): the run is kept under ``<run>/wandb`` and can be
uploaded later with ``wandb sync``; nothing reaches the network while training.
"""

from __future__ import annotations

import json
import math
import secrets
from pathlib import Path
from typing import Literal

from .errors import UserError

WandbMode = Literal["online", "offline", "disabled"]
WANDB_MODES: tuple[WandbMode, ...] = ("online", "offline", "disabled")

LOGGERS = ("jsonl", "tensorboard", "wandb")


def _scalars(record: dict) -> dict[str, float]:
    """The numeric fields of a metrics record (warnings and other text stay in metrics.jsonl)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class TensorBoardSink:
    """One scalar per numeric field, at the record's step, in ``<run>/tensorboard``."""

    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:
            raise UserError(f"train.loggers has tensorboard but it is not installed ({err}): "
                            f"pip install tensorboard, or drop it from train.loggers") from None
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def write(self, record: dict) -> None:
        for key, value in _scalars(record).items():
            self.writer.add_scalar(key, value, global_step=int(record.get("step", 0)))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """A W&B run (offline unless ``mode`` says otherwise) whose id is kept in the run directory, so a
    resumed run continues the same W&B run."""

    def __init__(self, run_dir: Path, project: str, mode: str, config: dict | None):
        if mode not in WANDB_MODES:
            raise UserError(f"train.wandb_mode={mode!r} is not a W&B mode: pick one of {', '.join(WANDB_MODES)}")
        try:
            import wandb
        except ImportError as err:
            raise UserError(f"train.loggers has wandb but it is not installed ({err}): pip install wandb, "
                            f"or drop it from train.loggers") from None
        from .files import write_text

        id_file = run_dir / "wandb_id.txt"
        run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
        write_text(id_file, run_id + "\n")
        self.run = wandb.init(project=project, mode=mode, dir=str(run_dir), id=run_id, resume="allow",
                              name=run_dir.name, config=config, settings=wandb.Settings(silent=True))
        self.last_step = -1

    def write(self, record: dict) -> None:
        step = int(record.get("step", 0))
        if step < self.last_step:  # W&B steps only go up (a resumed run may log a step again)
            return
        self.last_step = step
        self.run.log(_scalars(record), step=step)

    def close(self) -> None:
        self.run.finish()


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl`` (readable while the run goes on) and hands
    each record to the other loggers."""

    def __init__(self, path: Path, enabled: bool = True, loggers: list[str] | tuple[str, ...] = ("jsonl",),
                 config: dict | None = None, wandb_project: str = "dinolite", wandb_mode: str = "offline"):
        self.path, self.enabled = Path(path), enabled
        self.sinks: list = []
        if enabled:
            run_dir = self.path.parent
            if "tensorboard" in loggers:
                self.sinks.append(TensorBoardSink(run_dir))
            if "wandb" in loggers:
                self.sinks.append(WandbSink(run_dir, wandb_project, wandb_mode, config))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        try:  # appended: each step's record is one line, and a resume drops a line cut by a kill
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # disk full, permissions: one line, not a traceback
            from .files import write_failure

            raise write_failure(self.path, err) from None
        for sink in self.sinks:
            sink.write(record)

    def drop_after(self, step: int) -> int:
        """Remove the records past ``step`` (written after the checkpoint a run resumes from, so each step
        appears once); returns how many went. Rewritten to a temporary file and renamed: never half a file."""
        if not self.enabled or not self.path.is_file():
            return 0
        kept, dropped = [], 0
        for line in self.path.read_text().splitlines():
            try:
                past = json.loads(line).get("step", 0) > step
            except (ValueError, AttributeError):  # a line cut by a kill mid-write
                past = True
            dropped += past
            if not past:
                kept.append(line)
        if dropped:
            from .files import write_text

            write_text(self.path, "".join(line + "\n" for line in kept))
        return dropped

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []
