"""The `labeler` entry point (`labeler.cli.main:app`, and `python -m labeler.cli` for torchrun): imports every
command module, each of which registers its commands on the one app of labeler/cli/_app.py.
"""

# isort: off
# The import order is the order of `labeler --help`: labelling, the review loop, trainers, heads.
from labeler.cli import label  # noqa: F401  (each command module registers its commands on `app`)
from labeler.cli import review  # noqa: F401
from labeler.cli import train  # noqa: F401
from labeler.cli import heads  # noqa: F401

# isort: on
from labeler.cli._app import app

__all__ = ["app"]
