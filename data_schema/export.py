"""Export the top-level records as JSON Schema files (`python -m data_schema.export`)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

import data_schema as ds

SCHEMA_DIR = Path(__file__).parent

# The documents a user or another tool reads; nested records appear inside them as $defs.
EXPORTED: dict[str, type[BaseModel]] = {
    "stereo_calibration": ds.StereoCalibration,  # calib/<rig>.yaml
    "calibration_report": ds.CalibrationReport,  # calib/<rig>.report/report.json
    "rectified_set": ds.RectifiedSet,  # RECTIFIED/pairs.json
    "manifest": ds.Manifest,  # DATASET/manifest.json
    "embedding_set": ds.EmbeddingSet,  # DATASET/embeddings/embeddings.json
    "embedding_shard": ds.EmbeddingShard,  # a line of DATASET/embeddings/index.jsonl
    "selection": ds.Selection,  # DATASET/selections/<name>.json
    "curation_report": ds.CurationReport,  # DATASET/curation.json
    "licence_record": ds.LicenceRecord,  # RUN/licences.json, EXPORT/licences.json
    "shard_entry": ds.ShardEntry,  # a line of DATASET/shards.jsonl
    "shard_plan": ds.ShardPlan,  # a line of DATASET/rows.jsonl
    "sample_record": ds.SampleRecord,  # a row of DATASET/tables/samples
    "object_row": ds.ObjectRow,  # a row of DATASET/tables/objects
    "track_row": ds.TrackRow,  # a row of DATASET/tables/tracks (--track)
    "heads_model_config": ds.HeadsModelConfig,  # `model_config` of RUN/checkpoints/*.pt
    "instance_params": ds.InstanceParams,  # `instances` of RUN/checkpoints/*.pt
    "epoch_metrics": ds.EpochMetrics,  # a row of RUN/metrics.json (and metrics.csv)
    "finetune_comparison": ds.FinetuneComparison,  # RUN/finetune/comparison.json
    "image_prediction": ds.ImagePrediction,  # OUT/<stem>.json of `labeler predict`
    "prediction_set": ds.PredictionSet,  # OUT/predictions.json
    "demo_truth": ds.DemoTruth,  # DEMO/truth/truth.json
    "sequence_truth": ds.SequenceTruth,  # DEMO/truth/sequence.json
    "review": ds.Review,  # a line of DATASET/reviews.jsonl
    "doubt_pass": ds.DoubtPass,  # DATASET/doubt.json
    "dataset_diff": ds.DatasetDiff,  # REPORT/diff.json of `labeler diff`
    "train_stereo_config": ds.TrainStereoConfig,  # `config` of OUT/config.json of `labeler train-stereo`
    "stereo_epoch_metrics": ds.StereoEpochMetrics,  # a row of OUT/metrics.json (and metrics.csv)
    "stereo_heldout_figures": ds.StereoHeldoutFigures,  # OUT/initial.json (the parent, before training)
    "stereo_run_summary": ds.StereoRunSummary,  # OUT/summary.json
    "train_sam2_config": ds.TrainSam2Config,  # `config` of OUT/config.json of `labeler train-sam2`
    "sam2_epoch_metrics": ds.Sam2EpochMetrics,  # a row of OUT/metrics.json (and metrics.csv)
    "sam2_heldout_figures": ds.Sam2HeldoutFigures,  # OUT/initial.json (the parent, before training)
    "sam2_run_summary": ds.Sam2RunSummary,  # OUT/summary.json
    "adapt_backbone_config": ds.AdaptBackboneConfig,  # `config` of OUT/*/config.json of `adapt-backbone`
    "dino_epoch_metrics": ds.DinoEpochMetrics,  # a row of OUT/warmup|adapt/metrics.json
    "adapt_run_summary": ds.AdaptRunSummary,  # OUT/summary.json of `labeler adapt-backbone`
}


def schema_text(model: type[BaseModel]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def main() -> None:
    for name, model in EXPORTED.items():
        schema_path(name).write_text(schema_text(model))
        print(schema_path(name))


if __name__ == "__main__":
    main()
