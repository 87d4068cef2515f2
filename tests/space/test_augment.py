"""Batched augmentation: reproducible, per-sample, exact when it should be, on the tensor's device."""

from __future__ import annotations

import pytest
import torch

from space import AugmentCfg, augment_batch, normalize

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]),
]
EVERYTHING = AugmentCfg(hflip_p=0.5, rotate_deg=20.0, crop_scale_min=0.6, brightness=0.3, contrast=0.3)


def _images(b: int = 4, c: int = 1, h: int = 24, w: int = 24, *, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, c, h, w), generator=gen, dtype=torch.uint8)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(4, 1, 24, 24), (3, 3, 16, 40)])
def test_output_is_float32_in_unit_range_on_the_same_device(
        shape: tuple[int, ...], dtype: torch.dtype, device: str) -> None:
    x = _images(*shape).to(device)
    x = x if dtype == torch.uint8 else (x / 255).to(dtype)
    out = augment_batch(x, EVERYTHING, generator=torch.Generator(device=device).manual_seed(1))
    assert out.shape == shape and out.dtype == torch.float32 and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_same_output_and_fresh_draws_on_every_call(device: str) -> None:
    x = _images().to(device)
    gen = torch.Generator(device=device).manual_seed(7)
    first, second = augment_batch(x, EVERYTHING, generator=gen), augment_batch(x, EVERYTHING, generator=gen)
    assert not torch.equal(first, second)  # the generator state advanced
    again = augment_batch(x, EVERYTHING, generator=torch.Generator(device=device).manual_seed(7))
    assert torch.equal(first, again)


@pytest.mark.parametrize("cfg", [
    AugmentCfg(rotate_deg=20.0), AugmentCfg(crop_scale_min=0.6), AugmentCfg(brightness=0.3),
    AugmentCfg(contrast=0.3), EVERYTHING,
], ids=["rotate", "crop", "brightness", "contrast", "everything"])
def test_copies_of_one_image_get_different_transforms(cfg: AugmentCfg) -> None:
    out = augment_batch(_images(1).expand(8, -1, -1, -1), cfg, generator=torch.Generator().manual_seed(0))
    flat = out.flatten(1)
    distance = torch.cdist(flat, flat)  # (8, 8)
    assert (distance + torch.eye(8) > 1e-3).all()  # every pair differs


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_identity_when_disabled_is_bit_exact(dtype: torch.dtype) -> None:
    x = _images()
    if dtype == torch.uint8:
        assert torch.equal(augment_batch(x, AugmentCfg()), x.to(torch.float32) / 255)
    else:
        xf = x / 255
        assert torch.equal(augment_batch(xf, AugmentCfg()), xf)


def test_flip_alone_is_an_exact_mirror() -> None:
    x = _images()
    out = augment_batch(x, AugmentCfg(hflip_p=1.0), generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, x.flip(-1).to(torch.float32) / 255)


def test_half_flip_mirrors_some_samples_and_leaves_the_rest() -> None:
    x = _images(1).expand(64, -1, -1, -1)
    out = augment_batch(x, AugmentCfg(hflip_p=0.5), generator=torch.Generator().manual_seed(0))
    plain, mirrored = x.to(torch.float32) / 255, x.flip(-1).to(torch.float32) / 255
    is_plain = (out == plain).flatten(1).all(1)
    is_mirrored = (out == mirrored).flatten(1).all(1)
    assert (is_plain | is_mirrored).all()
    assert 10 < int(is_mirrored.sum()) < 54


def test_resampled_flip_is_a_mirror_too() -> None:
    # A (negligible) rotation takes the grid_sample path; the mirror must still be one.
    x = _images(h=20, w=32) / 255
    cfg = AugmentCfg(hflip_p=1.0, rotate_deg=1e-6)
    out = augment_batch(x, cfg, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.flip(-1), atol=1e-4, rtol=0)
    out = augment_batch(x, AugmentCfg(rotate_deg=1e-6), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, atol=1e-4, rtol=0)


def test_rotation_of_a_non_square_image_does_not_shear() -> None:
    # A soft disk in the centre of a 2:1 image must stay a disk under any rotation.
    h, w = 48, 96
    yy, xx = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    radius = (xx**2 + yy**2).sqrt()
    disk = torch.sigmoid((14 - radius) / 1.5).expand(16, 1, h, w)
    out = augment_batch(disk, AugmentCfg(rotate_deg=30.0), generator=torch.Generator().manual_seed(0))
    inside = radius < 20  # (H, W), whose sources lie inside the image (no padding involved)
    assert (out - disk)[..., inside].abs().max() < 0.02  # a shear would be off by up to ~0.7


def test_crop_zooms_in() -> None:
    # A centred bright square grows (or stays) under a zoom-in crop; it never shrinks.
    x = torch.zeros(16, 1, 32, 32)
    x[..., 8:24, 8:24] = 1
    out = augment_batch(x, AugmentCfg(crop_scale_min=0.5), generator=torch.Generator().manual_seed(0))
    assert (out.flatten(1).sum(1) >= x.flatten(1).sum(1) - 1e-3).all()
    assert (out.flatten(1).sum(1) > x.flatten(1).sum(1) + 1).any()


def test_brightness_scales_each_sample_by_one_factor_in_range() -> None:
    x = (_images(16) / 255).clamp(0.2, 0.6)  # away from the clamp
    out = augment_batch(x, AugmentCfg(brightness=0.3), generator=torch.Generator().manual_seed(0))
    ratio = out / x  # (B, 1, H, W)
    per_sample = ratio.flatten(1)
    torch.testing.assert_close(per_sample, per_sample[:, :1].expand_as(per_sample))
    assert ((per_sample >= 0.7 - 1e-6) & (per_sample <= 1.3 + 1e-6)).all()
    assert per_sample[:, 0].std() > 0.05


def test_contrast_keeps_each_mean_and_rgb_works() -> None:
    x = (_images(8, 3) / 255).clamp(0.3, 0.7)
    out = augment_batch(x, AugmentCfg(contrast=0.2), generator=torch.Generator().manual_seed(0))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((out * luma).sum(1).mean((1, 2)), (x * luma).sum(1).mean((1, 2)))


def test_global_generator_is_used_when_none_given() -> None:
    torch.manual_seed(3)
    first = augment_batch(_images(), EVERYTHING)
    torch.manual_seed(3)
    assert torch.equal(augment_batch(_images(), EVERYTHING), first)


@pytest.mark.parametrize(("x", "message"), [
    (torch.zeros(1, 8, 8, dtype=torch.uint8), "shape (B, C, H, W), got shape (1, 8, 8)"),
    (torch.zeros(1, 1, 8, 8, dtype=torch.int64), "uint8 or floating point, got dtype torch.int64"),
])
def test_bad_images_are_rejected(x: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        augment_batch(x, EVERYTHING)


def test_empty_batch() -> None:
    assert augment_batch(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), EVERYTHING).shape == (0, 1, 8, 8)


def test_normalize_maps_to_minus_one_one() -> None:
    u8 = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    out = normalize(u8)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.flatten(), torch.tensor([-1.0, -0.6, 1.0]))
    torch.testing.assert_close(normalize(torch.tensor([0.5], dtype=torch.float64)), torch.tensor([0.0]))
    # The two paths of the training loop agree bit for bit.
    x = _images()
    assert torch.equal(normalize(x), normalize(augment_batch(x, AugmentCfg())))
