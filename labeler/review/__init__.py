"""The review loop: decisions on doubtful labels (`decisions`) and the `labeler review` web app (`app`).

`load_decisions(open_dataset(path))` gives the decisions in force; its `rejected_samples` and
`rejected_objects` are what training and the exports leave out.
"""

from labeler.review.decisions import Decisions, decide, kept_sample_ids, labels_sha256, load_decisions

__all__ = ["Decisions", "decide", "kept_sample_ids", "labels_sha256", "load_decisions"]
