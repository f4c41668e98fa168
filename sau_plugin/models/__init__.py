"""Model registry: ``create_model(name, num_classes)`` instead of an if/elif ladder.

Pure-torch models with BackdoorBench-identical state_dict keys are always available
(``preactresnet18``, ``vgg19``, ``vgg19_bn``, ``resnet18``). The other torchvision
architectures BackdoorBench builds by name are added when torchvision imports.
"""

from __future__ import annotations

from typing import Callable, Dict

import torch.nn as nn

from ..errors import ModelError
from .preact_resnet import PreActResNet18
from .resnet import ResNet18
from .vgg import VGG
from .weights import (build_model, fold_pruning, infer_model_kwargs, load_weights, rename_by_position,
                      strip_module_prefix)

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}

# Names BackdoorBench's generate_cls_model maps straight onto torchvision constructors
# (it builds them with num_classes only, no pretrained weights).
_TORCHVISION_NAMES = (
    "resnet34", "resnet50", "alexnet", "vgg11", "vgg16", "squeezenet1_0", "densenet121", "densenet161",
    "inception_v3", "googlenet", "shufflenet_v2_x1_0", "mobilenet_v2", "mobilenet_v3_large",
    "resnext50_32x4d", "wide_resnet50_2", "mnasnet1_0", "efficientnet_b0", "efficientnet_b3",
)


def register(name: str):
    """Decorator: register ``fn(num_classes, **kwargs) -> nn.Module`` under ``name``."""

    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


@register("preactresnet18")
def _preactresnet18(num_classes: int, in_channels: int = 3, width: int = 64) -> nn.Module:
    return PreActResNet18(num_classes=num_classes, in_channels=in_channels, width=width)


@register("vgg19")
def _vgg19(num_classes: int, in_channels: int = 3) -> nn.Module:
    return VGG(batch_norm=False, num_classes=num_classes, in_channels=in_channels)


@register("vgg19_bn")
def _vgg19_bn(num_classes: int, in_channels: int = 3) -> nn.Module:
    return VGG(batch_norm=True, num_classes=num_classes, in_channels=in_channels)


@register("resnet18")
def _resnet18(num_classes: int, in_channels: int = 3) -> nn.Module:
    return ResNet18(num_classes=num_classes, in_channels=in_channels)


def _torchvision_models():
    try:
        import torchvision.models as tvm  # optional: CUDA wheels of torchvision do not import with CPU torch
    except Exception:  # ImportError, or an ABI mismatch surfacing as RuntimeError/OSError
        return None
    return tvm


def list_models() -> list:
    """Names ``create_model`` accepts on this machine (torchvision ones only if it imports)."""
    names = sorted(_REGISTRY)
    if _torchvision_models() is not None:
        names += sorted(n for n in _TORCHVISION_NAMES if n not in _REGISTRY)
    return names


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build model ``name`` for ``num_classes`` classes (random initialisation)."""
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if name in _REGISTRY:
        return _REGISTRY[name](num_classes, **kwargs)
    if name in _TORCHVISION_NAMES:
        tvm = _torchvision_models()
        if tvm is None:
            raise ModelError(
                f"model {name!r} needs torchvision, which does not import here; install a torchvision matching "
                f"your torch, or use one of {', '.join(sorted(_REGISTRY))}"
            )
        kwargs.pop("in_channels", None)
        return getattr(tvm, name)(num_classes=num_classes, **kwargs)
    raise ModelError(f"unknown model {name!r}; supported: {', '.join(list_models())}")


__all__ = ["create_model", "list_models", "register", "infer_model_kwargs", "load_weights", "build_model",
           "strip_module_prefix", "fold_pruning", "rename_by_position", "PreActResNet18", "VGG", "ResNet18"]
