#!/usr/bin/env python
"""Write a benchmark folder (Set5, Set14, B100, Urban100, Manga109 layout) from HR images.

For each scale s: <output>/GTmod{s}/<name>.png is the HR image cropped to a multiple of s and
<output>/LRbicx{s}/<name>.png its downscale by MATLAB's imresize, bit for bit, the folders BasicSR's test
option files read. Input files are never modified.

Example:
  python datasets/prepare_benchmark.py --input datasets/benchmark/Set5/HR \\
      --output datasets/benchmark/Set5 --scales 2 3 4
"""

import argparse
import logging
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)

from hersr_arch.data.prepare import make_benchmark_layout  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="folder of HR images (not recursive)")
    parser.add_argument("--output", required=True, help="benchmark folder, e.g. datasets/benchmark/Set5")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="scales (default 2 3 4)")
    parser.add_argument("--border", choices=["mirror", "clamp"], default="mirror",
                        help="MATLAB's rule for samples past the image border: 'mirror' (current MATLAB; "
                        "EDSR's benchmark LR_bicubic files, the default) or 'clamp' (older MATLAB; RCAN's "
                        "and SelfExSR's LR files)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        count = make_benchmark_layout(args.input, args.output, args.scales, border=args.border)
    except (OSError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    folders = ", ".join(f"GTmod{s}/LRbicx{s}" for s in args.scales)
    print(f"Wrote {count} images to {args.output} ({folders}).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
