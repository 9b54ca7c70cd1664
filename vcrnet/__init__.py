"""vcrnet: the model library of vcr-study.

Data (``vcrnet.data``), cached features (``vcrnet.features``), the joint model
(``vcrnet.model``), its couplings (``vcrnet.couplings``), the flat training configuration
(``vcrnet.config``), the training loop and evaluation (``vcrnet.train``), the leaderboard CSV and
its scoring (``vcrnet.leaderboard``) and the metrics' names (``vcrnet.metrics``). Its modules
import torch and never ray, optuna or mlflow; ``vcrnet.metrics`` and ``vcrnet.errors`` import
nothing heavy (stdlib only), so the harness can read names and errors without loading torch.
"""

from vcrnet.errors import InputError, VCRDataError

__all__ = ["InputError", "VCRDataError"]
