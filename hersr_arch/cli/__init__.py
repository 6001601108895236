"""Console commands: ``basicsr`` (BasicSR's train/test pipelines with HERSR registered) and ``hersr``.

Importing this package turns on PyTorch's transparent-huge-page allocation for large CPU tensors
(``THP_MEM_ALLOC_ENABLE=1``, unless the environment already sets it). Without it, glibc maps every
tensor over its mmap threshold (at most 32 MiB) afresh and the kernel faults it in 4 KiB at a time:
a 640x360 forward of hersr_s took ~420k page faults, 22x the 320x180 count for 4x the pixels, and
time grew faster than pixels. PyTorch reads the variable once, at its first CPU allocation, so it is
set here, before the commands' modules allocate anything (a test checks that it takes effect).
"""

import os

os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
