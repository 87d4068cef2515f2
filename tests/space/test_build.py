"""The CNN builder: the seed nets' exact parameter counts, shapes, structure, init, MACs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from space import PRESETS, BlockCfg, ModelCfg, build_cnn, count_macs, count_params
from space.config import ACTIVATIONS

# docs/SEED_NETS.md, with 1 input channel and 3 classes.
SEED_PARAMS = {
    "baseline": 8_195, "net0": 18_563, "net1": 27_811, "net2": 55_523,
    "net3": 55_523, "net4": 55_827, "net5": 55_827, "net6": 33_331,
}


def test_every_seed_net_has_a_preset() -> None:
    assert set(PRESETS) == set(SEED_PARAMS)


@pytest.mark.parametrize(("name", "expected"), SEED_PARAMS.items())
def test_preset_parameter_count_matches_seed_table(name: str, expected: int) -> None:
    assert count_params(build_cnn(PRESETS[name])) == expected
    assert count_params(PRESETS[name]) == expected  # the analytic count agrees


@pytest.mark.parametrize("size", [32, 64, 96, 224])
@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_output_shape_at_any_input_size(name: str, size: int) -> None:
    model = build_cnn(PRESETS[name]).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, size, size))
    assert out.shape == (2, 3)
    assert torch.isfinite(out).all()


def test_module_structure_and_state_dict_keys_are_stable() -> None:
    # The exported model.pt relies on these keys; changing them breaks saved models.
    model = build_cnn(PRESETS["net5"])
    keys = list(model.state_dict())
    assert keys[:7] == ["features.0.conv.weight", "features.0.conv.bias", "features.0.bn.weight",
                        "features.0.bn.bias", "features.0.bn.running_mean", "features.0.bn.running_var",
                        "features.0.bn.num_batches_tracked"]
    assert [k for k in keys if k.startswith("head.")] == [
        "head.fc0.weight", "head.fc0.bias", "head.fc1.weight", "head.fc1.bias",
        "head.out.weight", "head.out.bias"]
    block = model.features[0]
    assert [type(m) for m in block] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]
    assert block.conv.stride == (1, 1) and block.conv.padding == (1, 1) and block.conv.bias is not None
    assert [type(m) for m in model.head] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout,
                                             nn.Linear]
    assert model.head.drop0.p == 0.2
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)


def test_stride_block_has_stride_two_and_no_pool_and_no_bn() -> None:
    block = build_cnn(PRESETS["net2"]).features[0]
    assert [type(m) for m in block] == [nn.Conv2d, nn.ReLU]
    assert block.conv.stride == (2, 2)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_kernel_size_sets_padding_and_keeps_the_count_analytic(kernel_size: int) -> None:
    cfg = ModelCfg(blocks=(BlockCfg(4, kernel_size=kernel_size, downsample="none"),), head_hidden=())
    model = build_cnn(cfg)
    assert model.features[0].conv.padding == (kernel_size // 2,) * 2
    assert model(torch.randn(1, 1, 9, 9)).shape == (1, 3)
    assert count_params(model) == count_params(cfg)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_name_builds(activation: str) -> None:
    expected = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}[activation]
    model = build_cnn(ModelCfg(blocks=(BlockCfg(4, activation=activation),), head_hidden=(8,)))
    assert isinstance(model.features[0].act, expected) and isinstance(model.head.act0, expected)


def test_init_is_kaiming_uniform_with_zero_bias_and_unit_batchnorm() -> None:
    torch.manual_seed(0)
    model = build_cnn(PRESETS["net5"])
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            fan_in = module.weight[0].numel()
            bound = math.sqrt(6 / fan_in)  # gain sqrt(2) * sqrt(3 / fan_in)
            w = module.weight.detach().abs()
            assert w.max() <= bound, name
            # PyTorch's default init has bound 1/sqrt(fan_in) = 0.41 * this one.
            if module.weight.numel() >= 192:
                assert w.max() > 0.8 * bound, name
            assert torch.count_nonzero(module.bias) == 0, name
        elif isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight)), name
            assert torch.count_nonzero(module.bias) == 0, name


def test_count_macs_by_hand() -> None:
    # baseline at 32 px: stride-2 convs give 16, 8, 4 px maps.
    expected = (16 * 16 * 9 * 1 * 8) + (8 * 8 * 9 * 8 * 16) + (4 * 4 * 9 * 16 * 32) + 32 * 64 + 64 * 3
    assert expected == 168_128
    assert count_macs(PRESETS["baseline"], 32) == expected
    # maxpool blocks on an odd size: conv at 10 px, pool to 5, conv at 5, pool to 3 (ceil mode).
    cfg = ModelCfg(blocks=(BlockCfg(4, downsample="maxpool"), BlockCfg(8, downsample="maxpool")),
                   head_hidden=(16,))
    assert count_macs(cfg, 10) == 10 * 10 * 9 * 1 * 4 + 5 * 5 * 9 * 4 * 8 + 8 * 16 + 16 * 3


def _counted_macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() // 2 // x.shape[0]  # a MAC is two FLOPs


@pytest.mark.parametrize("size", [10, 64, 224])
@pytest.mark.parametrize("name", ["baseline", "net3", "net6"])
def test_count_macs_agrees_with_torch_flop_counter(name: str, size: int) -> None:
    model = build_cnn(PRESETS[name]).eval()
    with torch.no_grad():
        assert count_macs(PRESETS[name], size) == _counted_macs(model, torch.zeros(2, 1, size, size))


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_deep_net_on_a_small_image_keeps_a_one_pixel_map(downsample: str) -> None:
    # 7 halvings of 32 px reach 1 px before the last block; the model must still run.
    cfg = ModelCfg(blocks=tuple(BlockCfg(4, downsample=downsample, batchnorm=True) for _ in range(7)))
    model = build_cnn(cfg)
    out = model(torch.randn(2, 1, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 3)
    assert count_macs(cfg, 32) == _counted_macs(model.eval(), torch.zeros(2, 1, 32, 32))


def test_rgb_and_class_count_are_honoured() -> None:
    cfg = ModelCfg(blocks=(BlockCfg(8),), head_hidden=(), in_channels=3, num_classes=5)
    assert build_cnn(cfg)(torch.randn(2, 3, 20, 20)).shape == (2, 5)


@pytest.mark.parametrize("bad", [None, "net0", 3])
def test_count_params_rejects_other_things(bad: object) -> None:
    with pytest.raises(ValueError, match="expected an nn.Module or a ModelCfg"):
        count_params(bad)  # type: ignore[arg-type]


def test_count_macs_rejects_bad_size() -> None:
    with pytest.raises(ValueError, match="got 0"):
        count_macs(PRESETS["net0"], 0)
