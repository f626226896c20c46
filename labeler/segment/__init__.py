"""Mask backends: `MASK_BACKENDS.get(name)(config)`; importing this package registers them."""

from labeler.segment import classical as _classical  # noqa: F401
from labeler.segment import sam2_amg as _sam2_amg  # noqa: F401
