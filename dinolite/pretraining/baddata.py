"""Bad data met during a run, as one clear line or a warning: images with another channel count than the
recipe's normalisation, shards shorter than their manifest, and data that are mostly undecodable."""

from __future__ import annotations

from pathlib import Path

from ..distributed import DistInfo
from ..errors import UserError
from ..schema import Config, DataConfig

BAD_SAMPLES = "bad_samples.txt"
MIN_IMAGES_FOR_BAD_FRACTION = 200  # a few bad files among the first images are not yet "mostly broken"


def check_channels(cfg: Config, channels: int) -> None:
    if len(cfg.augment.mean) != channels:
        raise UserError(f"augment.mean/std have {len(cfg.augment.mean)} values but the images have "
                        f"{channels} channel(s): set augment.mean and augment.std to {channels} value(s)")


def short_epoch(root: str, epoch: int, steps_per_epoch: int, step: int, dist: DistInfo) -> tuple[int, str]:
    """The loader ended ``epoch`` early at ``step``: its shards hold fewer samples than their manifest says.
    One process skips to the next epoch (the schedules go on from there): returns the steps missed and the
    warning. Several processes cannot agree on a shorter epoch without a collective per step, so they stop
    with one line."""
    missing = (epoch + 1) * steps_per_epoch - step
    where = f"the shards of {root}"
    if dist.world > 1:
        raise UserError(f"{where} hold fewer samples than their manifest says (epoch {epoch} ended {missing} "
                        f"steps early on rank {dist.rank}): run 'dinolite shards --verify {root}' "
                        f"and fix the manifest or rewrite the shards")
    return missing, (f"{where} hold fewer samples than their manifest says: epoch {epoch} ended {missing} steps "
                     f"early (no sample recycled); check them with 'dinolite shards --verify {root}'")


def check_bad_fraction(data: DataConfig, run_dir: Path, bad: int, read: int) -> None:
    """Stop when the data are mostly broken (more than data.max_bad_fraction of the images read so far)."""
    limit = data.max_bad_fraction
    if read >= MIN_IMAGES_FOR_BAD_FRACTION and bad > limit * read:
        listed = f" (listed in {Path(run_dir) / BAD_SAMPLES})" if data.source == "folder" else ""
        raise UserError(f"{bad} of the {read} images read so far could not be decoded{listed}, more than "
                        f"data.max_bad_fraction={limit:g}: fix or remove them, or raise data.max_bad_fraction")
