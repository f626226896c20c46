"""labeler's deterministic FoundationStereo releases: the documented fill rule, bit for bit, and the layout.

The parity vectors (data/foundation_stereo_*) were computed by the official code on these exact values, so
the rule may not drift: a change needs new vectors (benchmarks/make_foundation_stereo_vectors.py) and a new
`FILL_RULE` name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from labeler.testing.foundation_stereo_release import (
    FILL_RULE,
    fill_value,
    main,
    release_cfg,
    release_layout,
    uniform,
)

DATA = Path(__file__).resolve().parent / "data"
M64 = (1 << 64) - 1


def reference_uniform(name: str, n: int) -> list[float]:
    """The rule as the module docstring states it, in plain Python integers."""
    seed = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    out = []
    for i in range(n):
        z = (seed + (i + 1) * 0x9E3779B97F4A7C15) & M64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        out.append((z >> 11) * 2.0**-53 * 2.0 - 1.0)
    return out


def test_fill_rule_is_the_documented_one() -> None:
    for name in ("cnet.conv1.weight", "feature.dino.pos_embed", "x" * 300):
        np.testing.assert_array_equal(uniform(name, 257), reference_uniform(name, 257))
    # golden values: what the vectors were made with
    assert uniform("cnet.conv1.weight", 3).tolist() == [
        0.3182331986331908,
        0.6778372257545027,
        -0.6898787887015851,
    ]
    conv = fill_value("cnet.conv1.weight", (2, 3, 3, 3))
    assert conv.dtype == np.float32 and conv.shape == (2, 3, 3, 3)
    golden = np.float32([0.10607773065567017, 0.22594574093818665, -0.22995959222316742])
    np.testing.assert_array_equal(conv.ravel()[:3], golden)
    assert np.abs(conv).max() < np.sqrt(3 / 27)  # LeCun uniform: fan_in 3 * 3 * 3


def test_fill_rule_by_kind_of_tensor() -> None:
    assert np.all(fill_value("a.bn.running_mean", (8,)) == 0)
    assert np.all(fill_value("a.bn.running_var", (8,)) == 1)
    steps = fill_value("a.bn.num_batches_tracked", (), "int64")
    assert steps.dtype == np.int64 and steps.shape == () and steps == 0
    scale = fill_value("a.norm.weight", (64,))
    assert np.all((scale >= 0.9) & (scale < 1.1)) and scale.std() > 0.02
    bias = fill_value("a.norm.bias", (64,))
    assert np.all(np.abs(bias) <= 0.1) and not np.array_equal(bias, fill_value("b.norm.bias", (64,)))
    token = fill_value("feature.dino.cls_token", (1, 1, 384))
    assert np.abs(token).max() <= 0.02


def test_the_vectors_were_made_with_this_rule_and_layout() -> None:
    meta = json.loads((DATA / "foundation_stereo_vectors.json").read_text())
    assert meta["fill_rule"] == FILL_RULE
    official = json.loads((DATA / "foundation_stereo_official_keys.json").read_text())
    for vit in ("vits", "vitl"):
        ours = {name: (shape, dtype) for name, shape, dtype in release_layout(vit)}
        assert ours == {name: (shape, dtype) for name, shape, dtype in official[vit]}


def test_cfg_and_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from labeler.models.foundation_stereo.release import FoundationStereoArgs

    for vit in ("vits", "vitl"):
        args = FoundationStereoArgs.from_mapping(yaml.safe_load(release_cfg(vit)))
        assert args.vit_size == vit and args.max_disp == 416 and args.valid_iters == 32
    assert main(["vitb", str(tmp_path)]) == 2 and "usage" in capsys.readouterr().out
    with pytest.raises(ValueError, match="vit"):
        release_cfg("vitg")
