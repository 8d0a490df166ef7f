"""Round 8 of a careless or hostile user's inputs to the models, data readers and examples:
each is refused by name before any work (no huge build, no raw torch or pathlib error)."""

import time

import pytest

from ppl_models import GRULanguageModel, PixelCNN, Vocabulary, WaveNet


# ------------------------------------------------------------------ 1. depth of the networks
@pytest.mark.parametrize("build, named", [
    (lambda: PixelCNN((1, 4, 4), channels=1, num_blocks=10**6), "num_blocks=1000000"),
    (lambda: PixelCNN((2, 4, 4), channels=2, num_blocks=10**7), "num_blocks=10000000"),
    (lambda: PixelCNN((1, 4, 4), channels=1, num_blocks=1025), "num_blocks=1025"),
    (lambda: WaveNet(layers=1, stacks=10**6, channels=1, skip_channels=1),
     "layers=1, stacks=1000000"),
    (lambda: WaveNet(layers=8, stacks=200, channels=1, skip_channels=1),
     "layers=8, stacks=200"),
    (lambda: GRULanguageModel(Vocabulary(), embedding=1, hidden=1, layers=10**6),
     "layers=1000000"),
    (lambda: GRULanguageModel(Vocabulary(), embedding=1, hidden=1, layers=1025),
     "layers=1025"),
])
def test_depth_beyond_the_limit_refused_before_building(build, named):
    """The weight count missed the modules' own cost: a million one-channel blocks (164 MB
    of weights) passed and built toward 19 GB; 10**5 GRU layers built for minutes."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"more than the limit of 1,024") as info:
        build()
    assert time.perf_counter() - start < 1.0
    message = str(info.value)
    assert named in message and "would take about" in message and "MB of modules" in message


def test_depth_at_the_limit_still_builds():
    """The bound is the documented maximum, not below it: small networks are unaffected."""
    assert len(WaveNet(layers=4, stacks=256, channels=1, skip_channels=1).blocks) == 1024
    assert len(PixelCNN((1, 4, 4), channels=1, num_blocks=3).blocks) == 3
