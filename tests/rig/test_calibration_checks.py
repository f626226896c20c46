"""Issue 12: a calibration with numbers no rectification can use is one line naming the field, on load."""

from __future__ import annotations

import pytest
import yaml

from labeler.errors import InputError
from labeler.rig.calibration import load_calibration
from tests.conftest import identity_calibration_yaml


def _edited(tmp_path, change) -> str:
    path = identity_calibration_yaml(tmp_path / "c.yaml", 96, 64)
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["left"]["K"][0].__setitem__(0, float("nan")), "left.K has a value that is not a finite"),
        (lambda d: d["T"].__setitem__(0, float("inf")), "T has a value that is not a finite"),
        (
            lambda d: d.__setitem__(
                "right", {"K": [[300.0, 0, 48], [0, 0.0, 32], [0, 0, 1]], "dist": [0.0] * 5}
            ),
            "right.K: focal lengths fx, fy must be positive",
        ),
        (lambda d: d["R"][0].__setitem__(1, 0.5), r"R is not a rotation \(R·Rᵀ differs from I"),
        (lambda d: d["rectification"]["P2"][0].__setitem__(3, 30.0), "rectification.P2: baseline"),
        (lambda d: d["rectification"]["P2"][0].__setitem__(0, 250.0), "P1 and P2 disagree"),
        (lambda d: d.__setitem__("schema_version", "1"), "schema_version must be the integer 1, got '1'"),
    ],
)
def test_bad_numbers_are_one_line_naming_the_field(tmp_path, change, message):
    path = _edited(tmp_path, change)
    with pytest.raises(InputError, match=message) as err:
        load_calibration(path)
    assert "\n" not in str(err.value) and str(err.value).startswith(path)


def test_binary_and_huge_files_are_one_line(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(InputError, match="not a text file"):
        load_calibration(tmp_path / "bin.yaml")
    (tmp_path / "huge.yaml").write_text("a: 1\n" * 300_000)
    with pytest.raises(InputError, match="bytes: not a calibration"):
        load_calibration(tmp_path / "huge.yaml")


def test_a_good_calibration_still_loads(tmp_path):
    calib = load_calibration(identity_calibration_yaml(tmp_path / "c.yaml", 96, 64))
    assert calib.rectified_baseline_m == pytest.approx(0.1)
