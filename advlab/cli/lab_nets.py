"""Train the lab's own nets on their real data and save their weights (the shipped segmenter and
detector weights in `advlab/zoo/weights/` were made this way):

    python -m advlab.cli.lab_nets classifier --arch fashion_cnn --out fashion_cnn.pt   # ~1 min, ~90% test accuracy
    python -m advlab.cli.lab_nets segmenter --out advlab/zoo/weights/fashion_segnet.pt  # prints held-out mIoU
    python -m advlab.cli.lab_nets detector --out advlab/zoo/weights/fashion_detector.pt # prints held-out mAP@0.5
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from advlab.data.image_set import ImageSet
from advlab.data.scenes import SCENE_CLASSES
from advlab.data.sources import load_images
from advlab.tasks import get_task
from advlab.zoo import detnet, segnet
from advlab.zoo.detectors import ImageDetector
from advlab.zoo.smallnets import ARCHITECTURES, FASHION_MEAN, FASHION_STD, train_classifier
from advlab.zoo.wrappers import ImageClassifier, ImageSegmenter


def classifier(args: argparse.Namespace) -> None:
    """A small Fashion-MNIST classifier (`advlab.zoo.smallnets`), with its test accuracy."""
    torch.manual_seed(args.seed)
    net = ARCHITECTURES[args.arch]()
    probe = ImageClassifier(net, name=args.arch, weights="training", mean=(FASHION_MEAN,), std=(FASHION_STD,),
                            input_size=28, class_names=[str(i) for i in range(10)], in_channels=1)
    train = load_images("fashion-mnist:train", probe, n=args.n)
    train_classifier(net, train.x, train.y, epochs=args.epochs, seed=args.seed)
    test = load_images("fashion-mnist:test", probe)
    with torch.no_grad():
        accuracy = (probe(test.x).argmax(1) == test.y).float().mean()
    torch.save(net.state_dict(), Path(args.out))
    print(f"test accuracy {accuracy:.4f}; saved {args.out}")


def segmenter(args: argparse.Namespace) -> None:
    """The fashion-scenes U-Net (`advlab.zoo.segnet`), with its held-out mIoU on 500 test scenes."""
    torch.manual_seed(args.seed)
    net = segnet.fashion_segnet()
    model = ImageSegmenter(net, name="advlab.zoo.segnet:fashion_segnet", weights="training", mean=(segnet.MEAN,),
                           std=(segnet.STD,), input_size=None, class_names=SCENE_CLASSES, in_channels=3)
    _train_on_scenes(args, net, model, "mIoU", lambda train: segnet.train_segnet(
        net, train.x, train.y, epochs=args.epochs, seed=args.seed))


def detector(args: argparse.Namespace) -> None:
    """The fashion-scenes Faster R-CNN (`advlab.zoo.detnet`), with its held-out mAP@0.5 on 500 test scenes."""
    torch.manual_seed(args.seed)
    net = detnet.fashion_detector()
    model = ImageDetector(net, name="advlab.zoo.detnet:fashion_detector", weights="training", class_names=SCENE_CLASSES)
    _train_on_scenes(args, net, model, "mAP@0.5", lambda train: detnet.train_detector(
        net, train.x, [t["boxes"] for t in train.boxes], [t["labels"] for t in train.boxes], epochs=args.epochs,
        seed=args.seed))


def _train_on_scenes(args: argparse.Namespace, net: torch.nn.Module, model: torch.nn.Module, score_name: str,
                     train: Callable[[ImageSet], object]) -> None:
    """Train a scene model on `-n` fashion-scenes:train canvases, score it with its task on 500 test
    scenes, save its state_dict to --out."""
    start = time.perf_counter()
    train(load_images("fashion-scenes:train", model, n=args.n))
    test = load_images("fashion-scenes:test", model, n=500)
    task = get_task(model.task)
    predictions = task.predict(model.eval(), test.x, 64, torch.device("cpu"))
    score = task.score(predictions, task.reference(test, predictions))  # against the scenes' masks or boxes
    _save(net, args.out)
    print(f"trained in {time.perf_counter() - start:.0f} s; held-out {score_name} on 500 test scenes {score:.4f}; "
          f"saved {args.out}")


def _save(net: torch.nn.Module, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.clone() for k, v in net.state_dict().items()}, out)


def main() -> None:
    p = argparse.ArgumentParser(description="Train one of the lab's own nets and save its state_dict.")
    sub = p.add_subparsers(dest="net", required=True)
    for name, run, n, epochs, out in (("classifier", classifier, 60000, 3, "fashion_cnn.pt"),
                                      ("segmenter", segmenter, 6000, 8, str(segnet.WEIGHTS)),
                                      ("detector", detector, 6000, 6, str(detnet.WEIGHTS))):
        s = sub.add_parser(name, help=(run.__doc__ or "").split(",")[0])
        if name == "classifier":
            s.add_argument("--arch", choices=sorted(ARCHITECTURES), default="fashion_cnn")
        s.add_argument("--out", default=out)
        s.add_argument("-n", type=int, default=n, help="training images")
        s.add_argument("--epochs", type=int, default=epochs)
        s.add_argument("--seed", type=int, default=0)
        s.set_defaults(run=run)
    args = p.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
