"""What every image source provides: padded uint8 images, their valid sizes, and labels."""

from __future__ import annotations

import torch


class ImageSource(torch.utils.data.Dataset):
    """A labelled image set decoded to uint8 tensors of one padded shape.

    Each image is bounded to ``size`` pixels on its longer side and written into the top-left
    corner of a ``channels x size x size`` canvas; ``(h, w)`` says which part is the image, so
    the on-device crops sample their boxes inside it and see the whole picture, whatever its
    aspect ratio. ``__getitems__`` returns a whole batch: ``(images, hw, labels)``.
    """

    channels: int
    size: int
    labels: torch.Tensor  # int64 [N]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def __getitem__(self, index: int):
        images, hw, labels = self.__getitems__([index])
        return images[0], hw[0], labels[0]
