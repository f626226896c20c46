"""`python -m labeler.cli`: the entry torchrun starts, the same app as the `labeler` command."""

from labeler.cli.main import app

app()
