"""Mask backends: `MASK_BACKENDS.get(name)(config)`; importing this package registers them."""

from labeler.segment import classical as _classical  # noqa: F401
