# Every target installs the venv first when it is missing, so each README command works alone.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
WORK ?= work
DATASET ?= datasets/demo

.PHONY: install dataset test test-slow bench clean-work schemas

$(BIN)/labeler: pyproject.toml
	bash .ci/install.sh $(PY) $(VENV)
	@touch $@

install: $(BIN)/labeler

dataset: $(BIN)/labeler
	$(BIN)/labeler demo $(WORK)/demo
	$(BIN)/labeler calibrate $(WORK)/demo/boards --rig demo-rig --board chessboard --cols 9 --rows 6 --square-m 0.03 --out calib/demo-rig.yaml
	$(BIN)/labeler rectify $(WORK)/demo/scenes --calib calib/demo-rig.yaml --out $(WORK)/rectified
	@echo "calibration: calib/demo-rig.yaml (report: calib/demo-rig.report/)"
	@echo "rectified pairs: $(WORK)/rectified"

test: $(BIN)/labeler
	$(BIN)/python -m pytest -q

test-slow: $(BIN)/labeler
	$(BIN)/python -m pytest -q -m slow

schemas: $(BIN)/labeler
	$(BIN)/python -m data_schema.export

clean-work:
	rm -rf $(WORK) $(DATASET)
