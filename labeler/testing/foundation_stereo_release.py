"""Deterministic FoundationStereo releases: the official layout, random-like weights, no download.

    python -m labeler.testing.foundation_stereo_release vits OUT_DIR   # OUT_DIR/cfg.yaml + model_best_bp2.pth

`write_release(vit, folder)` writes what NVIDIA publishes for a trained model: `model_best_bp2.pth`
holding `{'model': state_dict, 'global_step': 0, 'epoch': 0}` with `cfg.yaml` beside it. The state dict has
every tensor of the official model (names, shapes and dtypes of labeler's implementation, which the tests
hold to the official code's key lists in tests/models/data/foundation_stereo_official_keys.json) for the
ViT-S release (11-33-40, about 250 MB) or the ViT-L one (23-51-11, about 1.5 GB). The values are NOT a
trained model: the disparities they give are meaningless, but fully determined, so the official code and
labeler's can be compared on them (tests/models/test_foundation_stereo_parity.py), and the training,
loading and labelling paths run on them.

The fill rule (`fill_value`) gives each tensor its values from its name and shape alone:

- seed: the first 8 bytes of BLAKE2b(name as UTF-8, digest size 8), little endian, as an unsigned 64-bit
  integer; element i (C order) draws the SplitMix64 output for counter `seed + (i + 1) * 0x9E3779B97F4A7C15`
  (mod 2**64; mixer: xor-shift 30, multiply 0xBF58476D1CE4E5B9, xor-shift 27, multiply
  0x94D049BB133111EB, xor-shift 31), and its top 53 bits give u in [0, 1), then v = 2u - 1 in [-1, 1);
- integer tensors (`num_batches_tracked`): 0; `running_mean`: 0; `running_var`: 1;
- `*.weight` of 2 or more dimensions: v * sqrt(3 / fan_in), fan_in = the product of all but the first
  dimension (unit-variance-preserving, as LeCun's uniform initialisation);
- 1-D `*.weight` (normalisation scales): 1 + 0.1 v; `*.bias`: 0.1 v;
- anything else (class / register tokens, position embeddings, layer-scale gammas): 0.02 v;

computed in float64 with integer arithmetic only, then rounded once to the tensor's dtype, so every
machine, OS and numpy version gives the same bits. `FILL_RULE` names this rule in the vector files made
with it (benchmarks/make_foundation_stereo_vectors.py): change the rule and the name together.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

FILL_RULE = "labeler-fs-fill-1 (BLAKE2b-8 seed, SplitMix64, LeCun-uniform weights)"
VITS = ("vits", "vitl")
CHECKPOINT_NAME = "model_best_bp2.pth"
CFG_NAME = "cfg.yaml"

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
# the settings of NVIDIA's released cfg.yaml files that the architecture reads (their training options
# are left out: the loader ignores them); vit_size is the one that differs between the two releases
_CFG = """\
vit_size: {vit}
max_disp: 416
hidden_dims: [128, 128, 128]
n_gru_layers: 3
n_downsample: 2
corr_levels: 2
corr_radius: 4
low_memory: 0
mixed_precision: true
valid_iters: 32
"""


def _splitmix64(counter: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 counters (wrapping arithmetic)."""
    z = counter
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def name_seed(name: str) -> int:
    """The tensor's 64-bit seed: BLAKE2b of its name, 8-byte digest, little endian."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def uniform(name: str, n: int) -> np.ndarray:
    """n values in [-1, 1) (float64), the tensor's stream (see the module docstring)."""
    with np.errstate(over="ignore"):
        counter = (np.arange(1, n + 1, dtype=np.uint64) * _GOLDEN) + np.uint64(name_seed(name))
        z = _splitmix64(counter)
    u: np.ndarray = (z >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return u * 2.0 - 1.0


def fill_value(name: str, shape: Sequence[int], dtype: str = "float32") -> np.ndarray:
    """The tensor `name`'s values under the fill rule; `dtype` a numpy name ("float32", "int64", ...)."""
    shape = tuple(int(s) for s in shape)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if not np.issubdtype(np.dtype(dtype), np.floating):
        return np.zeros(shape, dtype=dtype)
    last = name.rsplit(".", 1)[-1]
    if last == "running_mean":
        return np.zeros(shape, dtype=dtype)
    if last == "running_var":
        return np.ones(shape, dtype=dtype)
    v = uniform(name, n)
    if last == "weight" and len(shape) >= 2:
        v = v * np.sqrt(3.0 / int(np.prod(shape[1:])))
    elif last == "weight":
        v = 1.0 + 0.1 * v
    elif last == "bias":
        v = 0.1 * v
    else:
        v = 0.02 * v
    return v.reshape(shape).astype(dtype)


def release_layout(vit: str) -> list[tuple[str, list[int], str]]:
    """(name, shape, dtype as torch prints it) of every tensor of the release, in state-dict order: those
    of labeler's FoundationStereo (built on the meta device: no memory, no init time)."""
    import torch

    from labeler.models.foundation_stereo import FoundationStereo, FoundationStereoArgs

    if vit not in VITS:
        raise ValueError(f"vit {vit!r}: one of {', '.join(VITS)}")
    with torch.device("meta"):
        model = FoundationStereo(FoundationStereoArgs(vit_size=vit))
    return [(k, list(t.shape), str(t.dtype)) for k, t in model.state_dict().items()]


def release_state_dict(vit: str) -> dict[str, torch.Tensor]:
    """The release's state dict under the fill rule (CPU tensors)."""
    import torch

    state = {}
    for name, shape, dtype in release_layout(vit):
        np_dtype = str(dtype).removeprefix("torch.")
        state[name] = torch.from_numpy(fill_value(name, shape, np_dtype))
    return state


def release_cfg(vit: str) -> str:
    """The cfg.yaml text of the release."""
    if vit not in VITS:
        raise ValueError(f"vit {vit!r}: one of {', '.join(VITS)}")
    return _CFG.format(vit=vit)


def write_release(vit: str, folder: str | Path) -> Path:
    """Write `folder/cfg.yaml` and `folder/model_best_bp2.pth` (whole or not at all); returns the .pth."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = release_state_dict(vit)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".partial-") as tmp:
        torch.save({"model": state, "global_step": 0, "epoch": 0}, Path(tmp) / CHECKPOINT_NAME)
        (Path(tmp) / CFG_NAME).write_text(release_cfg(vit))
        os.replace(Path(tmp) / CFG_NAME, folder / CFG_NAME)
        os.replace(Path(tmp) / CHECKPOINT_NAME, folder / CHECKPOINT_NAME)
    return folder / CHECKPOINT_NAME


def cached_release(vit: str, folder: str | Path) -> Path:
    """`folder`'s release .pth, written first when absent (a session-wide cache for tests and demos)."""
    folder = Path(folder)
    weights = folder / CHECKPOINT_NAME
    if not (weights.is_file() and (folder / CFG_NAME).is_file()):
        shutil.rmtree(folder, ignore_errors=True)
        write_release(vit, folder)
    return weights


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in VITS:
        print(f"usage: python -m labeler.testing.foundation_stereo_release {{{'|'.join(VITS)}}} OUT_DIR")
        return 2
    print(write_release(args[0], args[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
