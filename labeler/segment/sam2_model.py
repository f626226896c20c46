"""Build a SAM2 model from the official `sam2` package: config by name or path, weights strictly from disk.

`load_sam2(config, checkpoint, device=...)` is the one entry point:

- `config` is a released config name (`sam2.1_hiera_t|s|b+|l`, or the SAM 2.0 `sam2_hiera_*`), looked up
  in the installed package's `configs/`, or a path to a YAML of the same form (a `model:` node with
  hydra `_target_`s);
- the YAML is read with OmegaConf and instantiated with `hydra.utils.instantiate`, never through hydra's
  global `compose`. Importing `sam2` initialises hydra's global config module as a side effect
  (`sam2/__init__.py`); `import_sam2` clears it again when it was not initialised before, so nothing of
  hydra's global state leaks into the rest of the program;
- the decoder gets the post-processing settings of the official `build_sam2` (dynamic multimask via
  stability), which only matter for single-mask output;
- the checkpoint is `{"model": state_dict}` as released; every key must match in name and shape, else a
  one-line `Sam2WeightsError` names `--sam2-checkpoint` and the file expected for the config.

Nothing is ever downloaded. Importing this module imports neither torch nor sam2.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labeler.errors import LabelerError, WeightsError

if TYPE_CHECKING:
    from sam2.modeling.sam2_base import SAM2Base

CHECKPOINT_FLAG = "--sam2-checkpoint"
CONFIG_FLAG = "--sam2-config"

RELEASED_CHECKPOINTS = {  # config name -> the checkpoint file Meta publishes for it
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
    "sam2_hiera_t": "sam2_hiera_tiny.pt",
    "sam2_hiera_s": "sam2_hiera_small.pt",
    "sam2_hiera_b+": "sam2_hiera_base_plus.pt",
    "sam2_hiera_l": "sam2_hiera_large.pt",
}

_DECODER_POSTPROCESSING = {  # what the official build_sam2(apply_postprocessing=True) adds
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}


class Sam2WeightsError(WeightsError):
    """A missing, unreadable or mismatched SAM2 checkpoint; the message is one line naming the flag."""


class Sam2ConfigError(LabelerError, ValueError):
    """A `--sam2-config` that is neither a released config name nor a readable SAM2 YAML."""


def expected_checkpoint(config: str) -> str:
    """What the user should pass for `config`, in words (a file name for released configs)."""
    name = RELEASED_CHECKPOINTS.get(config)
    return name if name is not None else f"the checkpoint trained with {config}"


def _package_dir() -> Path:
    spec = importlib.util.find_spec("sam2")  # locates the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise Sam2ConfigError(
            "the `sam2` package is not installed; install it with SAM2_BUILD_CUDA=0 pip "
            "install --no-build-isolation sam2"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_config(config: str) -> Path:
    """A released config name (`sam2.1_hiera_s`) or a YAML path -> the YAML file."""
    if config in RELEASED_CHECKPOINTS:
        family = "sam2.1" if config.startswith("sam2.1") else "sam2"
        path = _package_dir() / "configs" / family / f"{config}.yaml"
        if path.is_file():
            return path
    path = Path(config).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    raise Sam2ConfigError(
        f"{CONFIG_FLAG} {config!r}: neither a released config "
        f"({', '.join(n for n in RELEASED_CHECKPOINTS if n.startswith('sam2.1'))}) "
        "nor an existing .yaml file"
    )


def check_checkpoint(checkpoint: str | Path | None, config: str) -> Path:
    """The checkpoint path, or a one-line error naming the flag and the file expected for `config`."""
    want = expected_checkpoint(config)
    if checkpoint is None:
        raise Sam2WeightsError(
            f"sam2 needs local weights: pass {CHECKPOINT_FLAG} PATH to {want} "
            f"(config {config}); nothing is downloaded"
        )
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise Sam2WeightsError(
            f"{path}: no such checkpoint file; pass {CHECKPOINT_FLAG} the local {want} (config {config})"
        )
    return path


def import_sam2() -> None:
    """Import `sam2` without keeping the hydra global state its `__init__` sets up."""
    if "sam2" in sys.modules:
        return
    from hydra.core.global_hydra import GlobalHydra

    was_initialized = GlobalHydra.instance().is_initialized()
    import sam2  # noqa: F401 — runs initialize_config_module("sam2") when hydra is not initialised

    if not was_initialized:
        GlobalHydra.instance().clear()


_VIDEO_PREDICTOR = {  # what the official build_sam2_video_predictor(apply_postprocessing=True) sets
    "_target_": "sam2.sam2_video_predictor.SAM2VideoPredictor",
    "binarize_mask_from_pts_for_mem_enc": True,
    "fill_hole_area": 8,
}


def instantiate_model(cfg: Any, *, video: bool = False) -> SAM2Base:
    """Instantiate the `model` node of a parsed SAM2 config (random weights, on the CPU). `video`: as the
    official `SAM2VideoPredictor` (the same modules and weights; its propagation and memory on top)."""
    import_sam2()
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    extra: dict[str, Any] = {"sam_mask_decoder_extra_args": _DECODER_POSTPROCESSING}
    cfg = OmegaConf.merge(cfg, {"model": {**extra, **(_VIDEO_PREDICTOR if video else {})}})
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def load_sam2(
    config: str, checkpoint: str | Path | None, *, device: str = "cpu", video: bool = False
) -> SAM2Base:
    """Build the model of `config` and load `checkpoint` strictly; eval mode, float32, on `device`.
    `video`: built as the official `SAM2VideoPredictor` (as `build_sam2_video_predictor` does).

    Raises:
        Sam2ConfigError: unknown config name, unreadable YAML, or no `model` node in it.
        Sam2WeightsError: checkpoint missing or unreadable, or keys / shapes that do not match the config.
    """
    path = resolve_config(config)
    ckpt = check_checkpoint(checkpoint, config)
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # noqa: BLE001 — any parse error becomes the one line
        raise Sam2ConfigError(f"{path}: not a readable YAML ({_first_line(err)})") from None
    if "model" not in cfg or "_target_" not in cfg.model:
        raise Sam2ConfigError(
            f"{path}: no `model:` node with a `_target_`; not a SAM2 config ({CONFIG_FLAG})"
        )

    import torch

    with torch.random.fork_rng(devices=[]):  # random init must not move the caller's RNG
        model = instantiate_model(cfg, video=video)
    state = _read_state_dict(ckpt, config)
    _check_keys(model.state_dict(), state, ckpt, config)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def _read_state_dict(ckpt: Path, config: str) -> dict[str, Any]:
    import torch

    want = expected_checkpoint(config)
    try:
        blob = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 — a corrupt or foreign file becomes the one line
        raise Sam2WeightsError(
            f"{ckpt}: not a readable torch checkpoint ({_first_line(err)}); pass "
            f"{CHECKPOINT_FLAG} the local {want}"
        ) from None
    if not isinstance(blob, dict) or not isinstance(blob.get("model"), dict):
        raise Sam2WeightsError(
            f"{ckpt}: no 'model' state dict in it (a SAM2 release checkpoint has one); "
            f"pass {CHECKPOINT_FLAG} the local {want}"
        )
    return blob["model"]


def _check_keys(model_state: dict[str, Any], state: dict[str, Any], ckpt: Path, config: str) -> None:
    from labeler.models.checkpoints import compare_keys

    mismatch = compare_keys(model_state, state)
    if mismatch:
        raise Sam2WeightsError(
            f"{ckpt}: does not match config {config} ({mismatch.describe()}); pass {CHECKPOINT_FLAG} "
            f"{expected_checkpoint(config)} (or the {CONFIG_FLAG} it was trained with)"
        )


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return (text[:160] + "…") if len(text) > 160 else (text or type(err).__name__)
