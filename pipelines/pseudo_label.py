"""The pseudo-label DAG, in three modules:

- `pipelines/plan.py`: input discovery, row planning, what is finished (resume and append);
- `pipelines/graph.py`: the Dask graph ([rectify →] load → disparity → masks → depth + objects → write);
- `pipelines/run.py`: execution on a cluster (`pipelines/cluster.py`), committing shards, the manifest.

`run_pseudo_label(cfg)` is the entry point of `labeler pseudo-label` and `labeler run`.
"""

from pipelines.run import LabelRun, run_pseudo_label

__all__ = ["LabelRun", "run_pseudo_label"]
