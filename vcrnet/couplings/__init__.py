"""The coupling methods, one file each; ``COUPLINGS`` is the only registry."""

from vcrnet.couplings.base import Coupling, CouplingConfig, factorised_pair_scores
from vcrnet.couplings.direct16 import Direct16Coupling
from vcrnet.couplings.gumbel import GumbelCoupling
from vcrnet.couplings.reinforce import ReinforceCoupling
from vcrnet.couplings.softmax import SoftmaxCoupling
from vcrnet.couplings.teacher import TeacherCoupling

COUPLINGS: dict[str, type[Coupling]] = {
    c.name: c
    for c in (SoftmaxCoupling, GumbelCoupling, ReinforceCoupling, Direct16Coupling, TeacherCoupling)
}

__all__ = [
    "COUPLINGS",
    "Coupling",
    "CouplingConfig",
    "Direct16Coupling",
    "GumbelCoupling",
    "ReinforceCoupling",
    "SoftmaxCoupling",
    "TeacherCoupling",
    "factorised_pair_scores",
]
