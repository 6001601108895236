#!/usr/bin/env python
"""Pack a folder of images into an LMDB for BasicSR's lmdb io backend (io_backend: {type: lmdb}).

Keys are the file names without extension and meta_info.txt is written inside the .lmdb
folder, so an HR and an LR LMDB made from folders with the same file names pair up in
PairedImageDataset. Input files are never modified.

Example:
  python datasets/create_lmdb.py --input datasets/DF2K/DF2K_train_HR_sub \\
      --output datasets/DF2K/DF2K_train_HR_sub.lmdb
"""

import argparse
import logging
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)

from hersr_arch.data.prepare import create_lmdb  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="folder of images (not recursive)")
    parser.add_argument("--output", required=True, help="LMDB folder to create; must end with .lmdb")
    parser.add_argument("--compress-level", type=int, default=1,
                        help="PNG compression of the stored images, 0-9 (default 1)")
    parser.add_argument("--workers", type=int, default=1,
                        help="parallel reading processes; above 1 all images are held in memory (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        count = create_lmdb(args.input, args.output, compress_level=args.compress_level, n_workers=args.workers)
    except (OSError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"Stored {count} images in {args.output}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
