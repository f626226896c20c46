"""Stereo backends: `STEREO_BACKENDS.create(config, device=...)` builds the one `config.name` names;
importing this package (or any module in it, such as `labeler.stereo.base`) registers them."""

from labeler.stereo import foundation_stereo as _foundation_stereo  # noqa: F401  (registers)
from labeler.stereo import sgbm as _sgbm  # noqa: F401
