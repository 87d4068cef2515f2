"""The one CNN builder, and analytic parameter / multiply-accumulate counts.

Module layout (the state_dict keys of an exported ``model.pt`` rely on it)::

    features.<i>.conv / .bn / .act / .pool     one nn.Sequential per BlockCfg
    pool                                       AdaptiveAvgPool2d(1)
    flatten                                    Flatten(1)
    head.fc<j> / .act<j> / .drop<j>            one group per hidden layer
    head.out                                   Linear to the classes
"""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import nn

from space.config import BlockCfg, ModelCfg

__all__ = ["build_cnn", "count_macs", "count_params"]

# Keyed exactly like config.ACTIVATIONS (a test checks), which validates the names up front.
_ACT_LAYERS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


def _act(name: str) -> nn.Module:
    if name not in _ACT_LAYERS:
        raise ValueError(f"activation must be one of {', '.join(map(repr, _ACT_LAYERS))}; got {name!r}")
    return _ACT_LAYERS[name]()


def _block(in_channels: int, cfg: BlockCfg) -> nn.Sequential:
    stride = 2 if cfg.downsample == "stride" else 1
    # The conv keeps its bias even before batchnorm: the seed nets did, and their parameter
    # counts (docs/SEED_NETS.md: net4 = net3 + 2 x 152 batchnorm parameters) say so.
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(in_channels, cfg.channels, cfg.kernel_size, stride=stride,
                           padding=cfg.kernel_size // 2)),
    ]
    if cfg.batchnorm:
        layers.append(("bn", nn.BatchNorm2d(cfg.channels)))
    layers.append(("act", _act(cfg.activation)))
    if cfg.downsample == "maxpool":
        # ceil_mode: identical to the seed nets' MaxPool2d(2) on even sizes, and a 1x1 map stays
        # 1x1 instead of failing, so every depth works at every image size.
        layers.append(("pool", nn.MaxPool2d(2, ceil_mode=True)))
    return nn.Sequential(OrderedDict(layers))


def build_cnn(cfg: ModelCfg) -> nn.Module:
    """Builds the CNN a :class:`ModelCfg` describes, with the seed nets' initialisation.

    Conv blocks (tracking channels), then ``AdaptiveAvgPool2d(1)`` -> ``Flatten`` -> per hidden
    size ``Linear -> activation -> [Dropout]`` -> ``Linear`` to ``num_classes``. The head uses the
    last block's activation. Conv and linear weights are Kaiming-uniform (fan_in, relu), biases
    zero; batchnorm weight 1, bias 0. The model works at any input size >= 1 pixel.

    Args:
        cfg: The model config.

    Returns:
        An ``nn.Sequential`` with children ``features``, ``pool``, ``flatten``, ``head``; input
        (B, in_channels, H, W) float, output (B, num_classes) logits.
    """
    if not isinstance(cfg, ModelCfg):
        raise ValueError(f"cfg must be a ModelCfg, got {cfg!r}")
    features: list[tuple[str, nn.Module]] = []
    channels = cfg.in_channels
    for i, block in enumerate(cfg.blocks):
        features.append((str(i), _block(channels, block)))
        channels = block.channels
    head: list[tuple[str, nn.Module]] = []
    act = cfg.blocks[-1].activation
    for j, units in enumerate(cfg.head_hidden):
        head += [(f"fc{j}", nn.Linear(channels, units)), (f"act{j}", _act(act))]
        if cfg.head_dropout > 0:
            head.append((f"drop{j}", nn.Dropout(cfg.head_dropout)))
        channels = units
    head.append(("out", nn.Linear(channels, cfg.num_classes)))
    model = nn.Sequential(OrderedDict([
        ("features", nn.Sequential(OrderedDict(features))),
        ("pool", nn.AdaptiveAvgPool2d(1)),
        ("flatten", nn.Flatten(1)),  # (B, C, 1, 1) -> (B, C)
        ("head", nn.Sequential(OrderedDict(head))),
    ]))
    model.apply(_init)
    return model


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d | nn.Linear):
        nn.init.kaiming_uniform_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def count_params(model_or_cfg: nn.Module | ModelCfg) -> int:
    """Counts parameters of a module, or analytically of the model a ModelCfg builds.

    Args:
        model_or_cfg: A module (all its parameters count) or a :class:`ModelCfg`.

    Returns:
        The number of scalar parameters (batchnorm running statistics are buffers, not counted).
    """
    if isinstance(model_or_cfg, nn.Module):
        return sum(p.numel() for p in model_or_cfg.parameters())
    if not isinstance(model_or_cfg, ModelCfg):
        raise ValueError(f"expected an nn.Module or a ModelCfg, got {model_or_cfg!r}")
    cfg = model_or_cfg
    total, channels = 0, cfg.in_channels
    for block in cfg.blocks:
        total += block.kernel_size**2 * channels * block.channels + block.channels
        total += 2 * block.channels if block.batchnorm else 0
        channels = block.channels
    for units in (*cfg.head_hidden, cfg.num_classes):
        total += channels * units + units
        channels = units
    return total


def count_macs(cfg: ModelCfg, image_size: int) -> int:
    """Multiply-accumulates of one forward pass for one square image, analytically.

    Counts convolutions (``H_out * W_out * k * k * C_in * C_out``) and linear layers
    (``in * out``); bias adds, batchnorm, activations and pooling are not counted.

    Args:
        cfg: The model config.
        image_size: Side of the square input in pixels.

    Returns:
        MACs per image.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    macs, size, channels = 0, image_size, cfg.in_channels
    for block in cfg.blocks:
        stride = 2 if block.downsample == "stride" else 1
        pad = block.kernel_size // 2
        size = (size + 2 * pad - block.kernel_size) // stride + 1
        macs += size * size * block.kernel_size**2 * channels * block.channels
        if block.downsample == "maxpool":
            size = math.ceil(size / 2)
        channels = block.channels
    for units in (*cfg.head_hidden, cfg.num_classes):
        macs += channels * units
        channels = units
    return macs
