"""The lab's own nets by name (`--model fashion_segnet`): the factory, the data they were trained on
(normalisation, input size, class names) and, for the scene models, the weights shipped with advlab.
The small Fashion-MNIST classifiers ship no weights: `python -m advlab.cli.lab_nets classifier`
trains them in about a minute, and `--weights FILE` names the file."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from advlab.core.errors import AdvlabError
from advlab.data.fashion import FASHION_CLASSES
from advlab.data.scenes import SCENE_CLASSES
from advlab.zoo import detnet, segnet, smallnets


@dataclass(frozen=True)
class LabNet:
    factory: str  # package.module:function, as a bring-your-own factory would be named
    task: str
    classes: tuple[str, ...]
    mean: tuple[float, ...] | None = None  # None: the net normalises its own inputs (the detector)
    std: tuple[float, ...] | None = None
    input_size: int | None = None  # None: images are taken at their own size
    shipped: Path | None = None  # weights that come with advlab
    train: str = ""  # how to make weights
    data: str = "fashion-scenes:test"  # the held-out data it was trained for: --data when none is given


LAB_NETS = {
    "fashion_cnn": LabNet("advlab.zoo.smallnets:fashion_cnn", task="classification", classes=FASHION_CLASSES,
                          mean=(smallnets.FASHION_MEAN,), std=(smallnets.FASHION_STD,), input_size=28,
                          train="python -m advlab.cli.lab_nets classifier --arch fashion_cnn --out FILE",
                          data="fashion-mnist:test"),
    "fashion_mlp": LabNet("advlab.zoo.smallnets:fashion_mlp", task="classification", classes=FASHION_CLASSES,
                          mean=(smallnets.FASHION_MEAN,), std=(smallnets.FASHION_STD,), input_size=28,
                          train="python -m advlab.cli.lab_nets classifier --arch fashion_mlp --out FILE",
                          data="fashion-mnist:test"),
    "fashion_segnet": LabNet("advlab.zoo.segnet:fashion_segnet", task="segmentation", classes=SCENE_CLASSES,
                             mean=(segnet.MEAN,), std=(segnet.STD,), shipped=segnet.WEIGHTS),
    "fashion_detector": LabNet("advlab.zoo.detnet:fashion_detector", task="detection", classes=SCENE_CLASSES,
                               shipped=detnet.WEIGHTS),
}


def load_lab_net(name: str, weights: str | None, *, mean: Any, std: Any, input_size: int | None,
                 task: str | None, **options: Any) -> nn.Module:
    """One of `LAB_NETS`, its weights the shipped ones unless `weights` names a file (`none`: random)."""
    from advlab.zoo.custom_models import load_custom

    net = LAB_NETS[name]
    if task is not None and task != net.task:
        raise AdvlabError(f"{name} is a {net.task} model, not a {task} model; drop --task or pick a {task} model")
    if weights in (None, "DEFAULT"):
        if net.shipped is None:
            raise AdvlabError(f"{name} ships no weights: train them with `{net.train}` and pass --weights FILE")
        weights = str(net.shipped)
    model = load_custom(net.factory, weights, mean=mean if mean is not None else net.mean,
                        std=std if std is not None else net.std, input_size=input_size or net.input_size,
                        num_classes=None, class_names_file=options.get("class_names_file"), task=net.task)
    model.name = name
    if not options.get("class_names_file"):
        model.class_names, model.named_classes = list(net.classes), True
    return model
