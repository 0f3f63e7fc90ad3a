"""The CPU work of end-to-end latency: decode an encoded image, resize it, normalise it.

The transfer paper reports TensorRT's speed twice: GPU only, and in total, "including loading
image, preprocessing, and post processing using CPU" (its Fig. 8). :class:`EncodedImages` stands
for the loading: one random image, encoded to PNG in memory once, is decoded again on every call,
resized to the model's input size and normalised with the ImageNet statistics the training data
uses, as a server would do for each request.
"""

from __future__ import annotations

import torch
from torchvision.io import decode_png, encode_png
from torchvision.transforms.v2.functional import normalize, resize

from ...data import IMAGENET_MEAN, IMAGENET_STD
from ...errors import FrontierError

SOURCE_SCALE = 8 / 7  # the encoded image is 8/7 of the input size (ImageNet's 256 -> 224 ratio)


class EncodedImages:
    """A PNG held in memory, turned into a normalised float batch on every call.

    Example:
        >>> batch = EncodedImages((3, 32, 32))(2)
        >>> tuple(batch.shape), batch.dtype
        ((2, 3, 32, 32), torch.float32)

    Args:
        input_shape: (channels, height, width) the model takes; channels 1 or 3.
        seed: seed of the random image.
    """

    def __init__(self, input_shape: tuple[int, int, int], seed: int = 0) -> None:
        channels, height, width = input_shape
        if channels not in (1, 3):
            raise FrontierError(f"input_shape: end-to-end timing decodes 1- or 3-channel PNGs, got {input_shape!r}")
        self.size = [height, width]
        source = (channels, round(height * SOURCE_SCALE), round(width * SOURCE_SCALE))
        image = torch.randint(0, 256, source, dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
        self.png = encode_png(image)
        self.mean, self.std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))

    def __call__(self, batch: int) -> torch.Tensor:
        """``batch`` decoded, resized, normalised images: float32 (batch, channels, height, width)."""
        images = [self._one() for _ in range(batch)]
        return torch.stack(images)

    def _one(self) -> torch.Tensor:
        image = resize(decode_png(self.png), self.size, antialias=True)
        return normalize(image.float().div_(255), self.mean, self.std)
