"""The R2C backbone and the joint answer-and-rationale model."""

from vcrnet.model.backbone import PRESETS, BackboneConfig, R2CBackbone, preset
from vcrnet.model.joint import JointModel, RationaleScorer

__all__ = ["PRESETS", "BackboneConfig", "JointModel", "R2CBackbone", "RationaleScorer", "preset"]
