#!/usr/bin/env python
"""Cut every image of a folder into overlapping square sub-images (DIV2K/DF2K style).

The k-th crop of 0001.png is written as 0001_s00k.png (BasicSR's convention), so HR and LR
sub-image folders made with matching sizes pair by name. For an LR folder of scale s pass the
HR sizes with --lr-scale s (they are divided by s). Input files are never modified.

Example (HR, then the x4 LR of the same images):
  python datasets/extract_subimages.py --input datasets/DF2K/DF2K_train_HR \\
      --output datasets/DF2K/DF2K_train_HR_sub --crop-size 480 --step 240 --mod-crop 12
  python datasets/extract_subimages.py --input datasets/DF2K/DF2K_train_LR_bicubic/X4 \\
      --output datasets/DF2K/DF2K_train_LR_bicubic_X4_sub --crop-size 480 --step 240 --lr-scale 4
"""

import argparse
import logging
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)

from hersr_arch.data.prepare import extract_subimages  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="folder of images (not recursive)")
    parser.add_argument("--output", required=True, help="folder for the sub-images (created if needed)")
    parser.add_argument("--crop-size", type=int, default=480, help="HR sub-image side in pixels (default 480)")
    parser.add_argument("--step", type=int, default=240, help="HR distance between crops (default 240)")
    parser.add_argument("--thresh-size", type=int, default=0,
                        help="uncovered HR border up to this size is dropped instead of cropped (default 0)")
    parser.add_argument("--lr-scale", type=int, default=1,
                        help="the input is the LR of this scale: crop size, step and threshold are divided by it")
    parser.add_argument("--mod-crop", type=int, default=1,
                        help="crop each image to a multiple of this first; use the value given to "
                             "generate_bicubic_lr.py for HR folders (default 1: no crop)")
    parser.add_argument("--strip-scale-suffix", action="store_true",
                        help="name 0001x4.png's crops 0001_s001.png (official DIV2K/Flickr2K LR names)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--compression", type=int, default=3, help="PNG compression level 0-9 (default 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    sizes = {"--crop-size": args.crop_size, "--step": args.step, "--thresh-size": args.thresh_size}
    if args.lr_scale < 1 or any(v % args.lr_scale for v in sizes.values()):
        parser.error(f"--lr-scale must be a positive integer dividing {sizes}, got {args.lr_scale}.")
    try:
        count = extract_subimages(args.input, args.output, args.crop_size // args.lr_scale,
                                  args.step // args.lr_scale, args.thresh_size // args.lr_scale,
                                  n_workers=args.workers, compression=args.compression,
                                  mod_crop=args.mod_crop, strip_scale_suffix=args.strip_scale_suffix)
    except (OSError, ValueError) as err:
        parser.exit(2, f"error: {err}\n")
    print(f"Wrote {count} sub-images to {args.output}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
