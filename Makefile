# Every target installs the venv first when it is missing, so each README command works alone.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
WORK ?= work
DATASETS ?= datasets

.PHONY: install dataset test test-slow bench schemas clean-work

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
	@echo
	@echo "calibration:     calib/demo-rig.yaml (report: calib/demo-rig.report/)"
	@echo "rectified pairs: $(WORK)/rectified"
	@echo "datasets:        $(DATASETS)/demo, $(DATASETS)/middlebury (manifest.json, data.zarr)"
	@echo "previews:        $(DATASETS)/demo/previews, $(DATASETS)/middlebury/previews"
	@echo "galleries:       $(DATASETS)/demo/index.html, $(DATASETS)/middlebury/index.html"

test: $(BIN)/labeler
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/labeler
	$(BIN)/python -m pytest -q -m slow

bench: $(BIN)/labeler
	$(BIN)/python benchmarks/bench_pipeline.py

schemas: $(BIN)/labeler
	$(BIN)/python -m data_schema.export

clean-work:
	rm -rf $(WORK) $(DATASETS) calib/demo-rig*
