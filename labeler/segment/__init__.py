"""Mask backends: `MASK_BACKENDS.create(config, device=...)` builds the one `config.name` names;
importing this package (or any module in it, such as `labeler.segment.base`) registers them."""

from labeler.segment import classical as _classical  # noqa: F401
from labeler.segment import sam2_amg as _sam2_amg  # noqa: F401
from labeler.segment import sam3 as _sam3  # noqa: F401
