"""Object features as R2C's backbone made them, frozen so that they can be cached.

ResNet-50 conv1..layer3 (stride 16) over the whole canvas -> RoIAlign 7x7 per box, with a
``Conv2d(1 -> 32, 3x3, stride 2)`` of the box's 14x14 mask (minus 0.5) added to the first 32
channels -> layer4 at stride 1 -> 7x7 average pool: one 2048-d vector per object.

Weights: ImageNet weights from ``--image-weights PATH`` or from the torchvision cache when present;
otherwise a seeded random initialisation, with a warning, its output rescaled to an ImageNet-like
magnitude (see ``_random_init_scale``). Random features still separate the flat
colours and shapes the synthetic data hinges on (see ``vcrnet.data.synth``); on real VCR use real
weights. The mask convolution is seeded-random in both cases (R2C trained it; here it is frozen).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import nn
from torchvision.ops import roi_align

from vcrnet.data.grounding import ImageFit
from vcrnet.errors import InputError

OBJECT_DIM = 2048
IMAGENET_LIKE_MEAN = 0.5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_FILES = ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth")  # V1 (R2C's) first, then V2


def find_image_weights(path: str | None) -> Path | None:
    """The weights file to use: ``path`` if given, else one in the torchvision cache, else None."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"--image-weights {path}: no such file")
        return p.absolute()
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    for name in TORCHVISION_FILES:
        if (cache / name).is_file():
            return cache / name
    return None


class ObjectFeatureExtractor(nn.Module):
    """``forward(images [B,3,H,W], rois [R,5], masks [R,14,14]) -> [R, 2048]``.

    ``rois`` rows are ``(batch index, x1, y1, x2, y2)`` in canvas pixels.
    """

    def __init__(self, weights: Path | None = None, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        resnet = torchvision.models.resnet50(weights=None)
        self.mask_conv = nn.Conv2d(1, 32, kernel_size=3, stride=2, padding=1)
        if weights is None:
            warnings.warn(
                "no ImageNet ResNet-50 weights (--image-weights, or the torchvision "
                f"cache); using a random initialisation seeded with {seed}: fine for the "
                "synthetic data, not for real VCR",
                stacklevel=2,
            )
        else:
            resnet.load_state_dict(_load_state_dict(weights, set(resnet.state_dict())))
        resnet.layer4[0].conv2.stride = (1, 1)  # R2C: layer4 at stride 1 on the 7x7 RoIs
        resnet.layer4[0].downsample[0].stride = (1, 1)
        self.trunk = nn.Sequential(
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.maxpool,
            resnet.layer1,
            resnet.layer2,
            resnet.layer3,
        )
        self.layer4 = resnet.layer4
        self.eval()
        self.requires_grad_(False)
        self.register_buffer("output_scale", torch.ones(()))
        if weights is None:
            self.output_scale.fill_(self._random_init_scale(seed))

    def _random_init_scale(self, seed: int) -> float:
        """A random ResNet-50's features are ~30x larger than an ImageNet one's (mean ~14
        against ~0.5), which would swamp a model's gradients. Rescale them to an ImageNet-like
        mean of 0.5, calibrated on a fixed seeded noise image (so independent of the data)."""
        noise = torch.randn(1, 3, 192, 384, generator=torch.Generator().manual_seed(seed))
        rois = torch.tensor([[0.0, 0.0, 0.0, 384.0, 192.0], [0.0, 96.0, 48.0, 224.0, 144.0]])
        with torch.inference_mode():
            mean = self(noise, rois, torch.ones(2, 14, 14)).mean().item()
        return IMAGENET_LIKE_MEAN / mean

    def forward(
        self, images: torch.Tensor, rois: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        feature_map = self.trunk(images)  # [B, 1024, H/16, W/16]
        pooled = roi_align(
            feature_map, rois, output_size=(7, 7), spatial_scale=1 / 16, sampling_ratio=0
        )  # [R, 1024, 7, 7]
        mask_features = self.mask_conv(masks.unsqueeze(1) - 0.5)  # [R, 32, 7, 7]
        pooled = torch.cat([pooled[:, :32] + mask_features, pooled[:, 32:]], dim=1)
        return self.layer4(pooled).mean(dim=(2, 3)) * self.output_scale  # [R, 2048]


def load_canvas(
    path: Path, fit: ImageFit, expected_size: tuple[int, int], metadata_path: str
) -> torch.Tensor:
    """The image resized and centred on the canvas, ImageNet-normalised: ``[3, H, W]``."""
    try:
        image = Image.open(path)
    except OSError as err:
        raise InputError(f"{path}: cannot read the image ({err})") from None
    with image:
        if image.size != expected_size:
            raise InputError(
                f"{metadata_path}: width/height {expected_size} disagree with the "
                f"image {path} ({image.size[0]}x{image.size[1]})"
            )
        size = (fit.resized_width, fit.resized_height)
        image.draft("RGB", size)  # JPEG: decode at a reduced scale when it is much larger
        try:
            resized = image.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        except OSError as err:
            raise InputError(f"{path}: cannot decode the image ({err})") from None
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    canvas = torch.zeros(3, fit.canvas[1], fit.canvas[0])
    canvas[:, fit.top : fit.top + size[1], fit.left : fit.left + size[0]] = pixels
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (canvas - mean) / std


def _load_state_dict(path: Path, expected: set[str]) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's input error
        raise InputError(
            f"--image-weights {path}: not a readable PyTorch checkpoint ({type(err).__name__})"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InputError(f"--image-weights {path}: expected a ResNet-50 state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing = expected - set(state)
    if missing:
        raise InputError(
            f"--image-weights {path}: not a ResNet-50 state dict "
            f"(missing {sorted(missing)[0]} and {len(missing) - 1} more)"
        )
    return {k: v for k, v in state.items() if k in expected}
