"""vcrnet: the model library of vcr-study.

Data (``vcrnet.data``), cached features (``vcrnet.features``), and later the joint model, its
couplings and training. Imports torch and never ray, optuna or mlflow.
"""

from vcrnet.errors import InputError, VCRDataError

__all__ = ["InputError", "VCRDataError"]
