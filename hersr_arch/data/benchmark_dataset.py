"""``BenchmarkPairedDataset``: BasicSR's ``PairedImageDataset`` that keeps grayscale GT files gray.

The MATLAB scripts behind the literature's bicubic row score a grayscale image (Set14's
``bridge``) on its gray value; BasicSR reads it as three equal channels and scores
``Y = 16 + 219/255 * gray``, 0.09 dB higher on Set14's mean. Whether a file is grayscale is a
property of the file, not of its pixels (a colour file may hold gray content, and MATLAB converts
it to Y like any colour image), so the dataset tells it: a single-channel GT file comes back as a
``(1, H, W)`` tensor, which the ``calculate_*_gray_as_y`` metrics score on its gray value. The LQ
input keeps three channels, as the network expects.
"""

from __future__ import annotations

from hersr_arch._compat import apply_torchvision_compat

apply_torchvision_compat()

from basicsr.data.paired_image_dataset import PairedImageDataset  # noqa: E402
from basicsr.utils import imfrombytes  # noqa: E402
from basicsr.utils.registry import DATASET_REGISTRY  # noqa: E402


@DATASET_REGISTRY.register()
class BenchmarkPairedDataset(PairedImageDataset):
    """``PairedImageDataset`` (same options) whose single-channel GT files give ``gt: (1, H, W)``."""

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        if imfrombytes(self.file_client.get(item["gt_path"], "gt"), flag="unchanged").ndim == 2:
            item["gt"] = item["gt"][:1]
        return item
