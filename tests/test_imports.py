"""The dependency direction: vcrnet imports with torch alone, never ray, optuna or mlflow."""

import subprocess
import sys
from pathlib import Path

BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"ray", "optuna", "mlflow", "study"}:
            raise ImportError(f"vcrnet must not import {name}")
sys.meta_path.insert(0, Block())
import vcrnet, vcrnet.data, vcrnet.features, vcrnet.data.synth, vcrnet.data.check
print("ok")
"""


def test_vcrnet_imports_without_the_harness_stack():
    out = subprocess.run([sys.executable, "-c", BLOCK], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
