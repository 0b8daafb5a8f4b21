"""The library packages (certify, manifolds, ddrs) never import the application (ddrs_app), the studies
(benchmarks), torchvision or tqdm.

Each package and every one of its submodules is imported in a fresh interpreter in which those three
names cannot be imported at all (an import hook raises ImportError and records who asked). ``import
torch`` itself tries ``from tqdm import tqdm`` in ``torch.hub`` (and falls back to a stand-in when it
fails), so the hook starts recording only after torch is imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("ddrs_app", "benchmarks", "torchvision", "tqdm")

SCRIPT = r"""
import importlib, json, pkgutil, sys, traceback
FORBIDDEN = %r
attempts = []
recording = [False]

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            if recording[0]:
                attempts.append([name, "".join(traceback.format_stack(limit=12))])
            raise ImportError(f"blocked by test_import_isolation: {name}")
        return None

sys.meta_path.insert(0, Block())
import torch  # noqa: F401  (torch.hub tries tqdm and falls back)
recording[0] = True
package = importlib.import_module(%r)
names = [package.__name__]
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    importlib.import_module(info.name)
    names.append(info.name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
print(json.dumps({"modules": names, "attempts": attempts, "loaded": loaded}))
"""


@pytest.mark.parametrize("package", ["certify", "manifolds", "ddrs"])
def test_library_package_imports_no_benchmarks_torchvision_or_tqdm(package):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT % (FORBIDDEN, package)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"importing {package} with {FORBIDDEN} blocked failed:\n{proc.stderr[-3000:]}"
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result["modules"]) >= 3, result["modules"]  # the package and its submodules were imported
    stacks = "\n\n".join(f"{name} imported from:\n{stack}" for name, stack in result["attempts"])
    assert result["attempts"] == [], stacks
    assert result["loaded"] == []
