"""One function per CLI command: take a validated config, do the work, return a typed outcome."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from data_schema.calibration import StereoCalibration
from data_schema.captures import RectifiedSet
from data_schema.commands import CalibrateConfig, DemoConfig, RectifyConfig
from data_schema.demo import DemoTruth


@dataclass(frozen=True)
class CalibrateOutcome:
    calibration: StereoCalibration
    path: Path
    report_dir: Path
    dropped: list[str]  # one line per capture not used, with the reason
    exported: list[Path]


def calibrate_command(cfg: CalibrateConfig) -> CalibrateOutcome:
    from labeler.io import check_out_file
    from labeler.rig.calibration import calibrate, save_calibration
    from labeler.rig.calibration_report import export_ros, write_report

    check_out_file(cfg.out_path)  # before the detection, which takes a while
    result = calibrate(
        cfg.captures, rig=cfg.rig, board=cfg.board, layout=cfg.layout, stride=cfg.stride, alpha=cfg.alpha
    )
    save_calibration(result.calibration, cfg.out_path)
    folder = write_report(result, cfg.out_path, result.preview)
    exported = (
        export_ros(result.calibration, cfg.out_path.parent, overwrite=True) if "ros" in cfg.export else []
    )
    dropped = [f"{v.view_id}: {v.reason}" for v in result.report.views if not v.used]
    return CalibrateOutcome(result.calibration, cfg.out_path, folder, dropped, exported)


def rectify_command(cfg: RectifyConfig) -> RectifiedSet:
    from labeler.rig.rectify import rectify_folder

    return rectify_folder(
        cfg.captures, calib_path=cfg.calib, out=cfg.out, layout=cfg.layout, stride=cfg.stride
    )


def demo_command(cfg: DemoConfig) -> DemoTruth:
    from labeler.synthetic.demo import write_demo, write_middlebury

    truth = write_demo(
        cfg.out,
        n_boards=cfg.n_boards,
        n_scenes=cfg.n_scenes,
        seed=cfg.seed,
        width=cfg.width,
        height=cfg.height,
        sequence_frames=cfg.sequence_frames,
    )
    if cfg.middlebury:
        write_middlebury(cfg.out)
    return truth
