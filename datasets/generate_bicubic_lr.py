#!/usr/bin/env python
"""Make LR images by MATLAB-style bicubic downscaling (BasicSR's imresize), as DIV2K's LR sets.

Each HR image is cropped to a multiple of the scale (or of --mod-crop), downscaled on float
values and rounded to its own bit depth (8 or 16 bits). LR files keep the HR file names.
Input files are never modified.

Example (x2, x3 and x4 at once; {scale} in --output is replaced by each scale):
  python datasets/generate_bicubic_lr.py --input datasets/DF2K/DF2K_train_HR \\
      --output "datasets/DF2K/DF2K_train_LR_bicubic/X{scale}" --scale 2 3 4 --mod-crop 12
"""

import argparse
import logging
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)

from hersr_arch.data.prepare import generate_bicubic_lr  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="folder of HR images (not recursive)")
    parser.add_argument("--output", required=True,
                        help="LR folder; with several scales it must contain {scale}, e.g. 'LR/X{scale}'")
    parser.add_argument("--scale", type=int, nargs="+", required=True, help="one or more scales from 1 to 8")
    parser.add_argument("--mod-crop", type=int, default=None,
                        help="crop HR to a multiple of this (a multiple of every scale, e.g. 12 for 2 3 4) "
                             "instead of a multiple of the scale")
    parser.add_argument("--no-mod-crop", action="store_true",
                        help="keep the whole HR image (LR sizes then round up, as in MATLAB)")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    parser.add_argument("--compression", type=int, default=3, help="PNG compression level 0-9 (default 3)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if len(args.scale) > 1 and "{scale}" not in args.output:
        parser.error(f"--output must contain {{scale}} when several scales are given, got {args.output!r}.")
    if args.no_mod_crop and args.mod_crop is not None:
        parser.error("--mod-crop and --no-mod-crop exclude each other.")
    mod_crop = False if args.no_mod_crop else (args.mod_crop if args.mod_crop is not None else True)
    for scale in args.scale:
        output = args.output.replace("{scale}", str(scale))
        try:
            count = generate_bicubic_lr(args.input, output, scale, mod_crop, n_workers=args.workers,
                                        compression=args.compression)
        except (OSError, ValueError) as err:
            parser.exit(2, f"error: {err}\n")
        print(f"Wrote {count} x{scale} LR images to {output}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
