# Every target installs the venv first when it is missing, so each README command works alone.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
WORK ?= work
DATASETS ?= datasets

.PHONY: install dataset test test-slow lint format bench schemas clean-work

$(BIN)/labeler: pyproject.toml
	bash .ci/install.sh $(PY) $(VENV)
	@touch $@

install: $(BIN)/labeler

# The main job on embedded data: a synthetic rig (boards -> calibrate; scenes -> rectify -> pseudo-label)
# and the real Middlebury Motorcycle pair (already rectified; its own calibration) through `labeler run`.
dataset: $(BIN)/labeler
	$(BIN)/labeler demo $(WORK)/demo
	$(BIN)/labeler calibrate $(WORK)/demo/boards --rig demo-rig --board chessboard --cols 9 --rows 6 --square-m 0.03 --out calib/demo-rig.yaml
	$(BIN)/labeler rectify $(WORK)/demo/scenes --calib calib/demo-rig.yaml --out $(WORK)/rectified
	$(BIN)/labeler pseudo-label $(WORK)/rectified --calib calib/demo-rig.yaml --out $(DATASETS)/demo --stereo sgbm --masks classical
	$(BIN)/labeler validate $(DATASETS)/demo
	$(BIN)/labeler run $(WORK)/demo/middlebury --calib calib/middlebury-motorcycle.yaml --out $(DATASETS)/middlebury
	$(BIN)/labeler validate $(DATASETS)/middlebury
	$(BIN)/labeler run $(WORK)/demo/sequence --calib calib/demo-rig.yaml --out $(DATASETS)/demo-video --stride 1 --track
	$(BIN)/labeler validate $(DATASETS)/demo-video
	@echo
	@echo "calibration:     calib/demo-rig.yaml (report: calib/demo-rig.report/)"
	@echo "rectified pairs: $(WORK)/rectified"
	@echo "datasets:        $(DATASETS)/demo, $(DATASETS)/middlebury, $(DATASETS)/demo-video (tracks) (manifest.json, shards.jsonl, tables/, data.zarr)"
	@echo "previews:        $(DATASETS)/demo/previews, $(DATASETS)/middlebury/previews"
	@echo "galleries:       $(DATASETS)/demo/index.html, $(DATASETS)/middlebury/index.html (pages in gallery/)"

test: $(BIN)/labeler
	$(BIN)/python -m pytest -q

# ruff (rules and why: pyproject.toml), mypy with the pydantic plugin and the import-layer check; CI runs
# this before the tests.
lint: $(BIN)/labeler
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/test_import_layers.py  # the layers of docs/layout.md

format: $(BIN)/labeler
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test-slow: $(BIN)/labeler
	$(BIN)/python -m pytest -q -m slow

bench: $(BIN)/labeler
	$(BIN)/python benchmarks/bench_pipeline.py

schemas: $(BIN)/labeler
	$(BIN)/python -m data_schema.export

clean-work:
	rm -rf $(WORK) $(DATASETS) calib/demo-rig*

# Curation of the demo dataset: a tiny RANDOM-INIT DINOv2 embeds every sample and object (no weights needed;
# real runs pass --backbone vits --weights dinov2_vits14_pretrain.pth), then near-duplicate groups, a diverse
# subset and outliers become the selections dedup / diverse / outliers (`--selection NAME` of the exports);
# `labeler review datasets/demo` then shows "more like this" and the near-duplicates on each sample.
.PHONY: curate-demo
curate-demo: $(BIN)/labeler
	@test -f $(DATASETS)/demo/manifest.json || $(MAKE) dataset
	OMP_NUM_THREADS=1 $(BIN)/labeler embed $(DATASETS)/demo --backbone tiny --random-init --input-size 224
	$(BIN)/labeler curate $(DATASETS)/demo --diverse 3 --outliers 2
	$(BIN)/labeler validate $(DATASETS)/demo
	$(BIN)/labeler export webdataset $(DATASETS)/demo --out $(WORK)/exports/demo-wds --selection diverse
	$(BIN)/labeler export lerobot $(DATASETS)/demo --out $(WORK)/exports/demo-lerobot

# DINOv2 heads on the demo dataset with a tiny RANDOM-INIT ViT (no weights needed): the chain
# train-heads -> finetune -> predict end to end in about a minute on 2 CPU cores. The figures it prints
# only show that the chain works and the loss falls; real runs pass --backbone vits --weights <file>.
# One torch thread: on 2 shared cores the tiny model's small convolutions run much faster that way.
RUNS ?= runs
HEADS_DEMO := $(RUNS)/heads-demo
HEADS_FLAGS ?= --backbone tiny --random-init --input-size 126 --max-depth-m 10 --batch-size 3 --workers 1
.PHONY: heads-demo
heads-demo: $(BIN)/labeler
	@test -f $(DATASETS)/demo/manifest.json || $(MAKE) dataset
	rm -rf $(HEADS_DEMO)
	OMP_NUM_THREADS=1 $(BIN)/labeler train-heads $(DATASETS)/demo --out $(HEADS_DEMO) $(HEADS_FLAGS) --epochs 30 --lr 1e-3
	OMP_NUM_THREADS=1 $(BIN)/labeler finetune $(HEADS_DEMO) --unfreeze-last 2 --lr 1e-4 --epochs 10
	OMP_NUM_THREADS=1 $(BIN)/labeler predict $(WORK)/rectified --calib calib/demo-rig.yaml --run $(HEADS_DEMO)/finetune --out $(HEADS_DEMO)/predictions
	@echo
	@echo "run:         $(HEADS_DEMO) (metrics.csv, curves.png, previews/, checkpoints/)"
	@echo "finetune:    $(HEADS_DEMO)/finetune (comparison.json: held-out change against the frozen run)"
	@echo "predictions: $(HEADS_DEMO)/predictions (*_overlay.png, *_depth.npy, *_ids.png, predictions.json)"

# DINOv2 adapted to the demo rig's images, on the CPU in minutes: `labeler adapt-backbone` (DINO + iBOT +
# KoLeo, EMA teacher; heads warm-up, then the last 2 blocks + LoRA on the others) from a tiny RANDOM-INIT
# ViT (no weights needed: the figures only show that the chain works) on the demo dataset's training scenes
# and the calibration captures (--images), the frozen-feature probe before / after (depth head, held-out
# AbsRel, printed), then train-heads on the adapted backbone. Real runs: docs/backbone-adaptation.md.
BACKBONE_DEMO := $(RUNS)/backbone-demo
BACKBONE_FLAGS ?= --backbone tiny --random-init --head-epochs 2 --epochs 10 --batch-size 4 --global-size 112 \
	--local-size 56 --local-crops 4 --prototypes 1024 --head-hidden 256 --head-bottleneck 64 --unfreeze-last 2 \
	--lora-rank 4 --lr 1e-3 --backbone-lr 1e-4 --lora-lr 1e-3 --momentum 0.99 --heldout-frac 0.5 --workers 1 \
	--probe-epochs 20 --probe-input-size 126 --probe-max-depth-m 10 --probe-batch-size 2
.PHONY: backbone-demo
backbone-demo: $(BIN)/labeler
	@test -f $(DATASETS)/demo/manifest.json || $(MAKE) dataset
	rm -rf $(BACKBONE_DEMO)
	OMP_NUM_THREADS=1 $(BIN)/labeler adapt-backbone $(DATASETS)/demo --out $(BACKBONE_DEMO) \
		--images $(WORK)/demo/boards $(BACKBONE_FLAGS)
	OMP_NUM_THREADS=1 $(BIN)/labeler train-heads $(DATASETS)/demo --out $(BACKBONE_DEMO)/heads --backbone tiny \
		--weights $(BACKBONE_DEMO)/backbone.pth --input-size 126 --max-depth-m 10 --batch-size 2 --workers 1 \
		--heldout-frac 0.5 --epochs 30 --lr 1e-3
	@echo
	@echo "adapted:  $(BACKBONE_DEMO)/backbone.pth (official DINOv2 layout; summary.json: parent sha256, probe)"
	@echo "curves:   $(BACKBONE_DEMO)/warmup/curves.png, $(BACKBONE_DEMO)/adapt/curves.png (previews/: PCA of patches)"
	@echo "probe:    $(BACKBONE_DEMO)/probe/before, $(BACKBONE_DEMO)/probe/after (train-heads runs, depth head)"
	@echo "heads:    $(BACKBONE_DEMO)/heads (train-heads --weights $(BACKBONE_DEMO)/backbone.pth)"

# Every CUDA path measured in one short run (benchmarks/gpu_check.py; README "GPU check"): results.json,
# results.md and log.txt in GPU_CHECK_OUT, the table appended to benchmarks/RESULTS.md on CUDA.
# DEVICE=cpu runs the same parts at small sizes (a few minutes) to prove they work. On a GPU machine
# without the venv: make gpu-check GPU_CHECK_PY=python3 (no install is attempted then).
DEVICE ?= cuda
GPU_CHECK_OUT ?= $(WORK)/gpu-check
GPU_CHECK_PY ?= $(BIN)/python
GPU_CHECK_FLAGS ?=
.PHONY: gpu-check
gpu-check: $(if $(filter $(BIN)/python,$(GPU_CHECK_PY)),$(BIN)/labeler)
	$(GPU_CHECK_PY) benchmarks/gpu_check.py --device $(DEVICE) --out $(GPU_CHECK_OUT) $(GPU_CHECK_FLAGS)

# FoundationStereo fine-tuned on the demo rig, on the CPU in minutes: `labeler train-stereo` from labeler's
# deterministic ViT-S release (labeler/testing/foundation_stereo_release.py: random-like weights, NOT a
# trained model) on the demo dataset's labelled scenes (small crops at half scale, 2 GRU iterations), held-out
# EPE against the rendered truth before and after (summary.json); then the fine-tuned checkpoint labels the
# rectified scenes through `labeler pseudo-label` and `labeler validate` checks that dataset. Real runs:
# docs/foundation-stereo-training.md.
STEREO_DEMO := $(RUNS)/stereo-demo
STEREO_PARENT := $(WORK)/foundation-stereo-vits
STEREO_TRAIN_FLAGS ?= --epochs 20 --batch-size 1 --lr 5e-5 --warmup-frac 0 --crop 96x128 --min-scale 0.45 \
	--max-scale 0.55 --eval-scale 0.5 --train-iters 2 --valid-iters 2 --max-disp 32 --workers 0 --previews 1
STEREO_LABEL_FLAGS ?= --scale 0.5 --valid-iters 2 --max-disp 32
.PHONY: stereo-demo
stereo-demo: $(BIN)/labeler
	@test -f $(DATASETS)/demo/manifest.json || $(MAKE) dataset
	@test -f $(STEREO_PARENT)/model_best_bp2.pth || \
		$(BIN)/python -m labeler.testing.foundation_stereo_release vits $(STEREO_PARENT)
	rm -rf $(STEREO_DEMO)
	OMP_NUM_THREADS=1 $(BIN)/labeler train-stereo $(DATASETS)/demo --stereo-weights $(STEREO_PARENT)/model_best_bp2.pth \
		--out $(STEREO_DEMO) --truth $(WORK)/demo $(STEREO_TRAIN_FLAGS)
	OMP_NUM_THREADS=1 $(BIN)/labeler pseudo-label $(WORK)/rectified --calib calib/demo-rig.yaml --out $(STEREO_DEMO)/dataset \
		--stereo foundation-stereo --stereo-weights $(STEREO_DEMO)/model_best_bp2.pth $(STEREO_LABEL_FLAGS) --masks classical
	$(BIN)/labeler validate $(STEREO_DEMO)/dataset
	@echo
	@echo "run:      $(STEREO_DEMO) (summary.json: held-out EPE before/after, metrics.csv, curves.png, previews/)"
	@echo "weights:  $(STEREO_DEMO)/model_best_bp2.pth + cfg.yaml (release layout)"
	@echo "relabelled with them: $(STEREO_DEMO)/dataset"

# SAM2 retrained on the demo dataset's masks, on the CPU in minutes: `labeler train-sam2` from a tiny RANDOM-INIT
# SAM2 (labeler/testing/sam2_tiny.py: 256 px input, 0.65 M parameters, NOT a trained model) on the demo scenes'
# confident masks, held-out point / box mIoU and automatic-mask recall before and after (summary.json); then
# the retrained checkpoint labels the rectified scenes through `labeler pseudo-label --masks sam2` and
# `labeler validate` checks that dataset. Real runs: docs/sam2-training.md.
SAM2_DEMO := $(RUNS)/sam2-demo
SAM2_PARENT := $(WORK)/sam2-tiny
DEMO_CALIB ?= calib/demo-rig.yaml
# The tiny model's predicted IoU and stability mean nothing yet: the generator's thresholds are opened.
SAM2_TRAIN_FLAGS ?= --epochs 80 --batch-size 1 --lr 5e-3 --warmup-frac 0 --corrections 3 --min-score 0.5 \
	--heldout-frac 0.25 --amg-points-per-side 8 --amg-pred-iou-thresh 0 --amg-stability-thresh 0 --workers 0 \
	--previews 1
SAM2_LABEL_FLAGS ?= --sam2-points-per-side 8 --sam2-pred-iou-thresh 0 --sam2-stability-score-thresh 0
.PHONY: sam2-demo
sam2-demo: $(BIN)/labeler
	@test -f $(DATASETS)/demo/manifest.json || $(MAKE) dataset
	@test -f $(SAM2_PARENT)/sam2_tiny.pt || $(BIN)/python -c \
		"from labeler.testing.sam2_tiny import write_tiny_sam2; write_tiny_sam2('$(SAM2_PARENT)')"
	rm -rf $(SAM2_DEMO)
	OMP_NUM_THREADS=1 $(BIN)/labeler train-sam2 $(DATASETS)/demo --sam2-checkpoint $(SAM2_PARENT)/sam2_tiny.pt \
		--sam2-config $(SAM2_PARENT)/sam2_tiny.yaml --out $(SAM2_DEMO) $(SAM2_TRAIN_FLAGS)
	OMP_NUM_THREADS=1 $(BIN)/labeler pseudo-label $(WORK)/rectified --calib $(DEMO_CALIB) --out $(SAM2_DEMO)/dataset \
		--stereo sgbm --masks sam2 --sam2-checkpoint $(SAM2_DEMO)/sam2.pt --sam2-config $(SAM2_PARENT)/sam2_tiny.yaml \
		$(SAM2_LABEL_FLAGS)
	$(BIN)/labeler validate $(SAM2_DEMO)/dataset
	@echo
	@echo "run:      $(SAM2_DEMO) (summary.json: held-out mIoU / recall before/after, metrics.csv, curves.png, previews/)"
	@echo "weights:  $(SAM2_DEMO)/sam2.pt ({'model': state_dict}; --masks sam2 --sam2-checkpoint it)"
	@echo "relabelled with them: $(SAM2_DEMO)/dataset"
