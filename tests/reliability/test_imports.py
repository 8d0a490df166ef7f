"""Importing the library changes no process-wide state.

Before the restructure (3533f44) importing ``inference.plots`` switched matplotlib's backend to
Agg; this test guards against that and against other global side effects (threads, seeds,
default dtype, Pyro's validation flag) coming back. It passes on 3533f44 already.
"""

import subprocess
import sys

from .conftest import ROOT

CHECK = r"""
import importlib, pkgutil, random, sys
import matplotlib
matplotlib.use("svg")
import numpy as np
import torch
import pyro

torch.set_num_threads(3)
torch.manual_seed(123)
np.random.seed(5)
random.seed(7)
before = (matplotlib.get_backend(), torch.get_num_threads(), torch.get_rng_state().clone(),
          np.random.get_state()[1].copy(), random.getstate(), torch.get_default_dtype(),
          pyro.util.is_validation_enabled() if hasattr(pyro.util, "is_validation_enabled")
          else None)
import inference, ppl_models
for package in (inference, ppl_models):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
after = (matplotlib.get_backend(), torch.get_num_threads(), torch.get_rng_state(),
         np.random.get_state()[1], random.getstate(), torch.get_default_dtype(),
         pyro.util.is_validation_enabled() if hasattr(pyro.util, "is_validation_enabled")
         else None)
names = ["backend", "threads", "torch rng", "numpy rng", "random", "dtype", "validation"]
changed = [n for n, b, a in zip(names, before, after)
           if not (torch.equal(b, a) if torch.is_tensor(b) else
                   (b == a).all() if isinstance(b, np.ndarray) else b == a)]
print("changed:", changed)
assert "matplotlib.pyplot" not in sys.modules or before[0] == after[0]
"""


def test_import_changes_no_global_state():
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(ROOT),
                                                       "OMP_NUM_THREADS": "1",
                                                       "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "changed: []" in done.stdout, done.stdout
