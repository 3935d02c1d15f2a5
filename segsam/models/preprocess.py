"""The one image convention between a 2D slice and the model input.

A slice of any size H x W is resized so that its longest side is ``size``
(bilinear, antialiased when shrinking), min-max normalised to [0, 1] over the
image (the LiteMedSAM convention), zero-padded at the bottom and right to
``size x size`` and replicated to three channels. :class:`ResizeInfo`
records the geometry so that prompts can be mapped into model coordinates
and predicted logits back onto the slice.

SAM's ViT-B expects SAM's own normalisation instead (the image scaled to
0..255, minus the ImageNet pixel mean, over the pixel standard deviation,
padding 0): :func:`encoder_input` applies it on top of :func:`prepare_image`,
so the geometry is the same for every encoder.

Coordinates are pixel coordinates (x = column, y = row); boxes are
(x0, y0, x1, y1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from segsam.methods import ENCODERS

__all__ = ["ResizeInfo", "SAM_PIXEL_MEAN", "SAM_PIXEL_STD", "encoder_input", "prepare_image", "resized_shape"]

#: SAM's pixel statistics on the 0..255 scale (``segment_anything.modeling.Sam``), used before its ViT.
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Returns the (h, w) of an H x W image whose longest side is resized to ``size``.

    Args:
        height (int): H.
        width (int): W.
        size (int): Target longest side.

    Returns:
        tuple[int, int]: (h, w), each at least 1.

    Raises:
        ValueError: If a size is not positive.
    """
    if height <= 0 or width <= 0 or size <= 0:
        raise ValueError(f"sizes must be positive, got height={height}, width={width}, size={size}")
    scale = size / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


@dataclass(frozen=True)
class ResizeInfo:
    """Geometry of one slice -> model-input transform.

    Attributes:
        original (tuple[int, int]): (H, W) of the slice.
        resized (tuple[int, int]): (h, w) of the resized image inside the
          padded ``size x size`` input (top-left corner).
        scale (float): ``size / max(H, W)``.
        size (int): Side of the square model input.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    scale: float
    size: int = 256

    def __post_init__(self) -> None:
        (height, width), (h, w) = self.original, self.resized
        if min(height, width, h, w, self.size) <= 0:
            raise ValueError(f"sizes must be positive: original={self.original}, resized={self.resized}")
        if h > self.size or w > self.size:
            raise ValueError(f"resized {self.resized} does not fit in the {self.size} x {self.size} input")

    @classmethod
    def for_shape(cls, height: int, width: int, size: int = 256) -> ResizeInfo:
        """Builds the geometry for an H x W slice.

        Args:
            height (int): H.
            width (int): W.
            size (int): Side of the square model input.

        Returns:
            ResizeInfo: The geometry used by :func:`prepare_image`.
        """
        return cls((height, width), resized_shape(height, width, size), size / max(height, width), size)

    def to_model_coords(self, xy: np.ndarray) -> np.ndarray:
        """Maps pixel coordinates (x, y) on the slice to model-input coordinates.

        Args:
            xy (np.ndarray): ... x 2 array of (x, y). A box (x0, y0, x1, y1)
              can be passed reshaped to ... x 2 x 2, or use
              :meth:`box_to_model_coords`.

        Returns:
            np.ndarray: float32 array of the same shape.

        Raises:
            ValueError: If the last dimension is not 2.
        """
        xy = np.asarray(xy, dtype=np.float64)
        if xy.ndim == 0 or xy.shape[-1] != 2:
            raise ValueError(f"expected an array of (x, y) pairs (... x 2), got shape {xy.shape}")
        factors = np.array([self.resized[1] / self.original[1], self.resized[0] / self.original[0]])
        return (xy * factors).astype(np.float32)

    def box_to_model_coords(self, boxes: np.ndarray) -> np.ndarray:
        """Maps boxes (x0, y0, x1, y1) on the slice to model-input coordinates.

        Args:
            boxes (np.ndarray): ... x 4 array.

        Returns:
            np.ndarray: float32 ... x 4 array.

        Raises:
            ValueError: If the last dimension is not 4.
        """
        boxes = np.asarray(boxes)
        if boxes.ndim == 0 or boxes.shape[-1] != 4:
            raise ValueError(f"expected boxes (x0, y0, x1, y1) as ... x 4, got shape {boxes.shape}")
        return self.to_model_coords(boxes.reshape(*boxes.shape[:-1], 2, 2)).reshape(boxes.shape)

    def mask_to_model(self, mask: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Resizes a binary mask on the slice into the padded model-input frame.

        Uses nearest-neighbour sampling; the padding is False.

        Args:
            mask (np.ndarray | torch.Tensor): ... x H x W, nonzero = inside.

        Returns:
            torch.Tensor: bool ... x size x size.

        Raises:
            ValueError: If the last two dimensions are not (H, W).
        """
        mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
        if mask.ndim < 2 or tuple(mask.shape[-2:]) != self.original:
            raise ValueError(f"expected a mask ... x {self.original[0]} x {self.original[1]}, got {tuple(mask.shape)}")
        lead = mask.shape[:-2]
        flat = (mask != 0).reshape(-1, 1, *self.original).float()
        small = F.interpolate(flat, size=self.resized, mode="nearest-exact")
        out = torch.zeros(flat.shape[0], 1, self.size, self.size, dtype=torch.bool)
        out[..., : self.resized[0], : self.resized[1]] = small > 0.5
        return out.reshape(*lead, self.size, self.size)

    def logits_to_original(self, logits: torch.Tensor) -> torch.Tensor:
        """Maps model-frame logits back onto the slice.

        Crops the padding and resizes bilinearly (``align_corners=False``).

        Args:
            logits (torch.Tensor): ... x size x size (e.g. B x 1 x 256 x 256
              low-resolution masks from the decoder).

        Returns:
            torch.Tensor: ... x H x W, same dtype as the input (floating).

        Raises:
            ValueError: If the last two dimensions are not (size, size).
        """
        if logits.ndim < 2 or tuple(logits.shape[-2:]) != (self.size, self.size):
            raise ValueError(f"expected logits ... x {self.size} x {self.size}, got {tuple(logits.shape)}")
        lead = logits.shape[:-2]
        cropped = logits[..., : self.resized[0], : self.resized[1]].reshape(-1, 1, *self.resized)
        restored = F.interpolate(cropped, size=self.original, mode="bilinear", align_corners=False)
        return restored.reshape(*lead, *self.original)


def prepare_image(slice_uint8: np.ndarray, size: int = 256) -> tuple[torch.Tensor, ResizeInfo]:
    """Turns one 2D slice into a model input.

    Args:
        slice_uint8 (np.ndarray): H x W (grey) or H x W x 3 (RGB) image,
          normally uint8 (any real dtype is accepted: the image is min-max
          normalised).
        size (int): Side of the square model input.

    Returns:
        torch.Tensor: float32 3 x size x size in [0, 1]; the image occupies the
          top-left h x w, the rest is 0.
        ResizeInfo: The geometry, for prompts and predictions.

    Raises:
        ValueError: If the array is not H x W or H x W x 3, is empty, or is
          not finite.
    """
    image = np.asarray(slice_uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise ValueError(f"expected an H x W or H x W x 3 slice, got shape {image.shape}")
    if image.size == 0:
        raise ValueError("the slice is empty")
    if image.dtype == bool or not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"expected a real-valued image, got dtype {image.dtype}")
    pixels = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    if not torch.isfinite(pixels).all():
        raise ValueError("the slice contains NaN or infinite values")
    pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)  # C x H x W

    info = ResizeInfo.for_shape(pixels.shape[1], pixels.shape[2], size)
    if info.resized != info.original:
        shrinking = info.resized[0] < info.original[0] or info.resized[1] < info.original[1]
        pixels = F.interpolate(
            pixels[None], size=info.resized, mode="bilinear", align_corners=False, antialias=shrinking
        )[0]
    low, high = pixels.min(), pixels.max()
    pixels = (pixels - low) / torch.clamp(high - low, min=1e-8)

    out = torch.zeros(3, size, size, dtype=torch.float32)
    out[:, : info.resized[0], : info.resized[1]] = pixels.expand(3, -1, -1)
    return out, info


def encoder_input(slice_uint8: np.ndarray, size: int, encoder: str) -> tuple[torch.Tensor, ResizeInfo]:
    """Turns one 2D slice into the input of an image encoder.

    Args:
        slice_uint8 (np.ndarray): H x W or H x W x 3 slice (see :func:`prepare_image`).
        size (int): Side of the square model input.
        encoder (str): ``"tiny_vit"`` (LiteMedSAM: [0, 1], as
          :func:`prepare_image`) or ``"vit_b"`` (SAM: (255 x - mean) / std
          inside the image, 0 in the padding).

    Returns:
        torch.Tensor: float32 3 x size x size.
        ResizeInfo: The geometry, for prompts and predictions.

    Raises:
        ValueError: If the slice is not a valid image or the encoder is unknown.
    """
    pixels, info = prepare_image(slice_uint8, size)
    if encoder == "tiny_vit":
        return pixels, info
    if encoder != "vit_b":
        raise ValueError(f"unknown encoder {encoder!r}; known: {', '.join(ENCODERS)}")
    mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    h, w = info.resized
    out = torch.zeros_like(pixels)
    out[:, :h, :w] = (pixels[:, :h, :w] * 255.0 - mean) / std
    return out, info
