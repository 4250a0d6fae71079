"""Multi-scale encoders for the siamese change-detection models, built from a spec string.

``build_encoder("timm:resnet18", in_channels=4)``, ``build_encoder("efficientnet_lite0:imagenet",
in_channels=4, bands=["B", "G", "R", "N"])``, ``build_encoder("torchgeo:ResNet18_Weights.SENTINEL2_ALL_MOCO",
in_channels=4, bands=[...], weights="local:/path/file.pth")``. See :mod:`.registry` for the specs,
the encoder contract and the normalisation attributes, and :mod:`.weights` for the first-layer
rule and the key mapping of local checkpoints.
"""

from __future__ import annotations

from deltacd.models.encoders.registry import NAMED_SPECS, Encoder, available_specs, build_encoder
from deltacd.models.encoders.weights import band_mixing, load_state_dict_file, remap_keys

__all__ = [
    "NAMED_SPECS",
    "Encoder",
    "available_specs",
    "band_mixing",
    "build_encoder",
    "load_state_dict_file",
    "remap_keys",
]
