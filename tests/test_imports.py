"""The dependency direction: vcrnet imports with torch alone, never ray, optuna or mlflow."""

import subprocess
import sys
from pathlib import Path

HARNESS = ("ray", "optuna", "mlflow", "study")
WALK = """
import importlib, pkgutil, sys
import vcrnet
names = [m.name for m in pkgutil.walk_packages(vcrnet.__path__, "vcrnet.")]
for name in names:
    importlib.import_module(name)
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
print(len(names), *loaded)
"""


def test_no_vcrnet_module_imports_the_harness_stack():
    """Every module of vcrnet (walked, not listed), imported in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", WALK, *HARNESS],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr
    count, *loaded = out.stdout.split()
    assert int(count) >= 20  # the walk found the package's modules
    assert loaded == []
