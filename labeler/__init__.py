"""labeler: Arducam stereo captures -> versioned pseudo-label datasets (metric depth + instance masks).

Public names only; importing this package loads nothing heavy (no torch, dask or zarr).
"""

from labeler.dataset.reader import Dataset, Sample, open_dataset

__all__ = ["Dataset", "Sample", "open_dataset"]
