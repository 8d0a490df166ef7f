"""inference.torch_pages: torch's read-only data mapped at import, and only that."""

import json
import subprocess
import sys
import textwrap

import pytest

from inference import torch_pages

MAPS = """\
7f0000000000-7f0000100000 r--p 00000000 fd:01 11 /env/lib/torch/lib/libtorch_cpu.so
7f0000100000-7f0000900000 r-xp 00100000 fd:01 11 /env/lib/torch/lib/libtorch_cpu.so
7f0000900000-7f0000a00000 r--p 00900000 fd:01 11 /env/lib/torch/lib/libtorch_cpu.so
7f0000a00000-7f0000a10000 rw-p 00a00000 fd:01 11 /env/lib/torch/lib/libtorch_cpu.so
7f0000b00000-7f0000c00000 r--p 00000000 fd:01 12 /env/lib/torch/lib/libtorch_cuda.so
7f0000c00000-7f0000d00000 r--p 00000000 fd:01 13 /other/libtorch_cpu_helper/libc.so.6
7f0000d00000-7f0000d10000 rw-p 00000000 00:00 0
7f0000e00000-7f0000e10000 r--p 00000000 fd:01 14 /tmp/my dir/libtorch_cpu.so (deleted)
"""


def test_read_only_segments_are_the_data_of_libtorch_cpu_only():
    segments = torch_pages.read_only_segments(MAPS)
    # code (r-x), writable data (rw-), other libraries and anonymous memory are left alone;
    # a path with spaces is read whole
    assert segments == [(0x7f0000000000, 0x7f0000100000), (0x7f0000900000, 0x7f0000a00000),
                        (0x7f0000e00000, 0x7f0000e10000)]


def test_elsewhere_than_linux_nothing_is_done(monkeypatch):
    monkeypatch.setattr(torch_pages, "_mapped_bytes", None)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert torch_pages.map_torch_constants() == 0
    assert torch_pages.map_torch_constants() == 0  # and once only


RESIDENT = textwrap.dedent("""
    import json, sys
    import torch

    def resident():
        size = rss = 0
        current = None
        for line in open("/proc/self/smaps"):
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:
                current = (len(fields) >= 6 and "libtorch_cpu" in fields[-1]
                           and fields[1].startswith("r--"))
            elif current and fields[0] == "Size:":
                size += int(fields[1])
            elif current and fields[0] == "Rss:":
                rss += int(fields[1])
        return rss / size

    before = resident()
    import inference
    from inference import torch_pages
    print(json.dumps({"before": before, "after": resident(), "mapped": torch_pages._mapped_bytes,
                      "again": torch_pages.map_torch_constants()}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_import_maps_every_read_only_page_of_libtorch_cpu_once():
    out = subprocess.run([sys.executable, "-c", RESIDENT], capture_output=True, text=True,
                         check=True, timeout=300)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["again"] == 0  # a second call does nothing
    if found["mapped"] == 0:
        pytest.skip("madvise(MADV_POPULATE_READ) refused here (Linux before 5.14)")
    # torch alone leaves most of its constant pages unmapped; after `import inference` every
    # one of them is in the page table
    assert found["before"] < 0.9
    assert found["after"] > 0.999
