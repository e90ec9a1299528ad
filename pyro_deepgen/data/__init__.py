"""Data sets for deep generative models: registry, loaders and file-format readers."""

from .amat import read_amat
from .datasets import (
    BINARIZE_OPTIONS,
    DATASETS,
    DatasetInfo,
    DynamicBinarizedDataset,
    default_root,
    image_shape,
    load_dataset,
)
from .digits import read_digits
from .download import ChecksumError, DownloadError, download_file, fetch
from .idx import read_idx
from .labels import (
    LabelledData,
    check_semi_supervised,
    draw_labels,
    labelled_subset,
    semi_supervised_data,
)
from .mat import read_frey

__all__ = [
    "BINARIZE_OPTIONS",
    "DATASETS",
    "ChecksumError",
    "DatasetInfo",
    "DownloadError",
    "DynamicBinarizedDataset",
    "LabelledData",
    "check_semi_supervised",
    "default_root",
    "download_file",
    "draw_labels",
    "fetch",
    "image_shape",
    "labelled_subset",
    "load_dataset",
    "read_amat",
    "read_digits",
    "read_frey",
    "read_idx",
    "semi_supervised_data",
]
