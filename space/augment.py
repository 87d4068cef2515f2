"""Batched, per-sample random augmentation on the tensor's device, and the input normalisation.

Augmentation runs on batches that already sit on the training device, fresh every call (unlike
the seed project, which augmented once when building the tensors). All geometric transforms of
a batch (mirror, rotation, random-resized crop) are folded into one affine matrix per sample and
applied with a single ``affine_grid`` + ``grid_sample``; brightness and contrast are per-sample
factors applied by broadcasting. No Python loop over samples.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from space.config import AugmentCfg

__all__ = ["augment_batch", "normalize"]

# ITU-R 601 luma weights, as torchvision's adjust_contrast uses for the mean of an RGB image.
_LUMA = (0.299, 0.587, 0.114)


def _to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [0, 1] -> float32 [0, 1]; returns `x` itself when already float32."""
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255
    if x.is_floating_point():
        return x.to(torch.float32)
    raise ValueError(f"images must be uint8 or floating point, got dtype {x.dtype}")


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Maps images to the seed nets' input range: ``(x - 0.5) / 0.5``.

    Args:
        x: uint8 images in [0, 255] or float images in [0, 1], any shape and device.

    Returns:
        float32 tensor in [-1, 1], same shape and device.
    """
    return (_to_unit_float(x) - 0.5) / 0.5


def augment_batch(x: torch.Tensor, cfg: AugmentCfg, *,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Applies random augmentation, drawn independently for every sample of the batch.

    In this order: horizontal mirror (probability ``hflip_p``), rotation by an angle uniform in
    ``[-rotate_deg, rotate_deg]``, random-resized crop (area fraction uniform in
    ``[crop_scale_min, 1]``, aspect kept, position uniform inside the image; resampled
    bilinearly, reflection padding where a rotated crop leaves the image), then brightness and
    contrast factors uniform in ``[1 - b, 1 + b]`` (contrast around each image's mean luma), each
    clamped to [0, 1]. Seven uniforms are drawn per sample whatever is enabled, so switching one
    transform on does not change the draws of the others. A mirror without rotation or crop is
    an exact ``flip``, not a resampling.

    Args:
        x: Images (B, C, H, W), uint8 in [0, 255] or float in [0, 1], on any device.
        cfg: What to apply. When ``cfg.enabled`` is False only the dtype changes (bit-exact;
            a float32 input is returned as is, not copied).
        generator: Source of randomness on ``x``'s device (reproducible for a seed, fresh on
            every call as its state advances); None uses torch's global generator.

    Returns:
        float32 images in [0, 1], shape (B, C, H, W), on ``x``'s device.
    """
    if x.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got shape {tuple(x.shape)}")
    if generator is not None and generator.device.type != x.device.type:
        raise ValueError(f"generator is on {generator.device} but the images are on {x.device}")
    out = _to_unit_float(x)
    if not cfg.enabled or x.shape[0] == 0:
        return out
    b, c, h, w = out.shape
    u = torch.rand(b, 7, generator=generator, device=out.device)  # (B, 7) uniforms in [0, 1)
    flip = u[:, 0] < cfg.hflip_p  # (B,)

    if cfg.rotate_deg > 0 or cfg.crop_scale_min < 1:
        angle = (2 * u[:, 1] - 1) * math.radians(cfg.rotate_deg)
        side = (cfg.crop_scale_min + (1 - cfg.crop_scale_min) * u[:, 2]).sqrt()  # crop side / image side
        shift_x = (2 * u[:, 3] - 1) * (1 - side)  # keeps the crop centre inside the image
        shift_y = (2 * u[:, 4] - 1) * (1 - side)
        sign = 1 - 2 * flip.to(torch.float32)  # -1 mirrors x
        cos, sin = angle.cos(), angle.sin()
        # theta maps output to input coordinates in affine_grid's normalised [-1, 1] frame:
        # input = side * S^-1 R S F output + shift, with F the mirror, R the rotation in pixel
        # space and S = diag(w, h) / 2 (so non-square images rotate without shearing).
        theta = torch.stack([
            torch.stack([side * cos * sign, -side * sin * (h / w), shift_x], dim=1),
            torch.stack([side * sin * (w / h) * sign, side * cos, shift_y], dim=1),
        ], dim=1)  # (B, 2, 3)
        grid = F.affine_grid(theta, [b, c, h, w], align_corners=False)  # (B, H, W, 2)
        out = F.grid_sample(out, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        out = out.clamp(0, 1)  # bilinear weights may overshoot 1 by a rounding error
    elif cfg.hflip_p > 0:
        out = torch.where(flip[:, None, None, None], out.flip(-1), out)

    if cfg.brightness > 0:
        factor = 1 + (2 * u[:, 5] - 1) * cfg.brightness
        out = (out * factor[:, None, None, None]).clamp(0, 1)
    if cfg.contrast > 0:
        factor = (1 + (2 * u[:, 6] - 1) * cfg.contrast)[:, None, None, None]  # (B, 1, 1, 1)
        if c == 3:
            luma = torch.tensor(_LUMA, device=out.device).view(1, 3, 1, 1)
            mean = (out * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
        else:
            mean = out.mean((1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
        out = ((out - mean) * factor + mean).clamp(0, 1)
    return out
