"""scaffold.memory: glibc keeps freed memory, so the chunks of an estimate stop page-faulting."""

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# The estimator's own pattern: IWAE in chunks of 250 particles, each chunk allocating and
# freeing [250, 20, 784] buffers (15.7 MB). By default glibc hands freed blocks of this size
# back to the kernel once enough is free at the top of its heap, and the next chunk touches
# fresh pages.
PROGRAM = """
import resource, sys
sys.path.insert(0, {examples!r}); sys.path.insert(0, {root!r})
import pyro, torch
from scaffold.memory import retain_freed_memory
torch.set_num_threads(1)
applied = retain_freed_memory() if {retain} else None
from inference import iwae_bound
from ppl_models.vae import VAE
torch.manual_seed(0)
vae = VAE((1, 28, 28), latent_dim=8, hidden=(64,))
x = (torch.rand(20, 1, 28, 28) < 0.3).float()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
def estimate():
    with pyro.validation_enabled(False):
        iwae_bound(vae.model, vae.guide, x, num_samples=1000, chunk_size=250)
estimate(), estimate()  # the heap grows to its working size
before = faults()
for _ in range(3):
    estimate()
print(applied, faults() - before)
"""


def minor_faults(retain: bool) -> tuple[str, int]:
    code = PROGRAM.format(examples=str(EXAMPLES), root=str(EXAMPLES.parent), retain=retain)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, timeout=120).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_retained_memory_is_reused_without_page_faults():
    applied, retained = minor_faults(retain=True)
    if applied != "True":
        pytest.skip("not glibc: mallopt is not there")
    _, default = minor_faults(retain=False)
    if default < 10_000:
        pytest.skip(f"this C library kept the memory by default ({default} faults)")
    # By default 47,000-86,000 faults (12 chunks of about 4,000 fresh 4 KiB pages each; once
    # 17,000, with part of the memory already mapped); kept, under 10 or, when the heap
    # still grows by a block, about 3,800 (five runs): at most one chunk's pages
    assert retained < 5_000 or retained < default / 5, (retained, default)
