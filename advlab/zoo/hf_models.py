"""Image classifiers of Hugging Face transformers (Wolf et al., "Transformers: State-of-the-Art Natural Language
Processing", EMNLP 2020 demos) by Hub name or local folder: `microsoft/resnet-50`, `hf:google/vit-base-patch16-224`,
`hf:PATH` (a `save_pretrained` folder). `AutoModelForImageClassification` builds the model and
`AutoImageProcessor` its preprocessing: the wrapper normalises with the processor's mean and std, and image files
are resized and cropped by the processor itself (normalisation off), so the model sees here what it sees in
transformers. Class names come from the model's `id2label`.

Weights: the Hub's (downloaded and cached by huggingface_hub, the default) or `--weights none` (the
architecture from its config, random). Needs `pip install 'advlab[transformers]'`. timm models on the Hub
(`timm/NAME`) load through timm instead (`advlab.zoo.timm_models`).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from advlab.core.errors import AdvlabError, first_line
from advlab.zoo.wrappers import ImageClassifier, check_logits

PREFIX = "hf:"  # hf:ORG/NAME or hf:PATH; a bare ORG/NAME is claimed too (advlab.zoo.models)
EXTRA = "pip install 'advlab[transformers]'"


class Logits(nn.Module):
    """A transformers classifier as a plain logits function: images (N, C, H, W) -> logits (N, K)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


class ProcessorGeometry:
    """A PIL image -> (C, H, W) float32 in [0, 1], resized and cropped by a transformers image processor with
    its normalisation off (the wrapper normalises); picklable, for DataLoader workers."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        out = self.processor(images=image, do_normalize=False, return_tensors="pt")["pixel_values"][0]
        return out.to(torch.float32)


def load_transformers(name: str, weights: str | None, *, mean: Sequence[float] | None,
                      std: Sequence[float] | None, input_size: int | None, num_classes: int | None,
                      **_: Any) -> ImageClassifier:
    """A transformers image classifier by Hub name or folder, wrapped with its image processor's preprocessing
    (mean/std/input size given here override it)."""
    transformers = _transformers()
    source = name.removeprefix(PREFIX)
    random = weights is not None and str(weights).lower() == "none"
    if weights is not None and not random and str(weights).upper() != "DEFAULT":
        raise AdvlabError(f"--weights {weights!r} for {name}: give DEFAULT (the Hub's weights, or the folder's) or "
                          "none; for weights of your own, save_pretrained them into a folder and pass --model hf:DIR")
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # an offline lookup is said once, in the line below, not also as its warnings
    try:
        if random:
            config = transformers.AutoConfig.from_pretrained(source, **({"num_labels": num_classes} if num_classes
                                                                         else {}))
            hf_model = transformers.AutoModelForImageClassification.from_config(config)
        else:
            hf_model = transformers.AutoModelForImageClassification.from_pretrained(source, **_labels(num_classes))
        processor = transformers.AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError, KeyError) as exc:  # not on the Hub, offline, not an image classifier
        raise AdvlabError(f"--model {name}: transformers could not load it as an image classifier "
                          f"({type(exc).__name__}: {first_line(exc)}); offline, fill the Hugging Face cache or pass "
                          "--model hf:DIR (a save_pretrained folder)") from None
    finally:
        hub_log.setLevel(level)
    hf_model.eval()
    for p in hf_model.parameters():
        p.requires_grad_(False)
    geometry = ProcessorGeometry(processor)
    probe = geometry(Image.new("RGB", (320, 256)))  # (C, H, W): the processor's crop
    size = input_size or int(probe.shape[-1])
    channels = int(getattr(hf_model.config, "num_channels", probe.shape[0]))
    net = Logits(hf_model)
    with torch.no_grad():
        out = net(torch.zeros(1, channels, size, size))
    check_logits(out, f"model {name}", batch=1)
    labels = getattr(hf_model.config, "id2label", None) or {}
    names = [str(labels.get(i, labels.get(str(i), i))) for i in range(int(out.shape[1]))]
    model = ImageClassifier(net, name=name, weights="none" if random else "pretrained",
                            mean=mean or processor.image_mean, std=std or processor.image_std, input_size=size,
                            class_names=names, in_channels=channels,
                            named_classes=any(n != f"LABEL_{i}" and n != str(i) for i, n in enumerate(names)))
    model.image_transform = geometry
    model.preprocessing = {"source": "transformers image processor", "processor": type(processor).__name__,
                           "input_size": size}
    return model.eval()


def _labels(num_classes: int | None) -> dict[str, Any]:
    return {"num_labels": num_classes, "ignore_mismatched_sizes": True} if num_classes else {}


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise AdvlabError(f"Hugging Face models need transformers, which is not installed: {EXTRA}") from None
    return transformers


__all__ = ["load_transformers"]
