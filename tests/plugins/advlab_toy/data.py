"""`fashion-attributes[:train|test]`: Fashion-MNIST (Xiao et al., 2017) images, each labeled with
four binary attributes that follow from its real class label."""
from __future__ import annotations

import torch
from torch import nn

from advlab.data.fashion import load_fashion_mnist
from advlab.data.image_set import ImageSet
from advlab.data.sources import image_source

ATTRIBUTES = ("footwear", "upper body", "long sleeves", "carried")
# Fashion-MNIST class -> its attributes: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat,
# 5 Sandal, 6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot
HAS = torch.tensor([[0, 1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0], [0, 1, 1, 0],
                    [1, 0, 0, 0], [0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1], [1, 0, 0, 0]])  # (10, 4)


class _TenClasses(nn.Module):
    """What Fashion-MNIST's loader asks of a model: ten classes, the model's channels and size."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.num_classes, self.in_channels, self.input_size = 10, model.in_channels, model.input_size


def attribute_set(spec: str, split: str, model: nn.Module, n: int | None) -> ImageSet:
    classes = load_fashion_mnist(spec, split, _TenClasses(model), n)
    return ImageSet(classes.images, HAS[classes.y], classes.names, spec, "ground-truth", ATTRIBUTES,
                    notes=classes.notes)  # y: (N, 4) int64 in {0, 1}


@image_source("fashion-attributes", usage="fashion-attributes[:train|test]",
              argument=lambda arg: arg in (None, "", "train", "test"))
def _fashion_attributes(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """Fashion-MNIST with four attributes per image (advlab-toy)."""
    return attribute_set(spec, arg or "test", model, n)
