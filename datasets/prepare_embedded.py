#!/usr/bin/env python
"""Build HERSR's small embedded dataset from the photographs scikit-image ships (no download).

Layout (see datasets/README.md): train/GT and train/LRbicx{s} (192x192 HR sub-images and their
MATLAB-bicubic LR), test/GTmod{s} and test/LRbicx{s} (held-out photographs, benchmark layout),
manifest.json. Running it again with the same options does nothing; --force rebuilds.
"""

import argparse
import logging
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)

from hersr_arch.data.prepare import build_embedded_dataset  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "embedded"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", default=str(DEFAULT_OUTPUT),
                        help="output folder (default: datasets/embedded next to this script)")
    parser.add_argument("--scales", type=int, nargs="+", default=[2, 3, 4], help="scales (default 2 3 4)")
    parser.add_argument("--crop-size", type=int, default=192,
                        help="training sub-image side, a multiple of every scale's lcm (default 192)")
    parser.add_argument("--step", type=int, default=192, help="distance between training sub-images (default 192)")
    parser.add_argument("--test-size", type=int, default=256, help="largest side of the test crops (default 256)")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is up to date")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = build_embedded_dataset(args.output, args.scales, crop_size=args.crop_size, step=args.step,
                                        test_size=args.test_size, force=args.force)
    except (OSError, ValueError, ImportError) as err:
        parser.exit(2, f"error: {err}\n")
    counts = result.manifest["counts"]
    state = "Built" if result.rebuilt else "Up to date:"
    print(f"{state} {result.root}: {counts['train/GT']} training sub-images from "
          f"{len(result.manifest['train'])} images, {len(result.manifest['test'])} test images.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
