#!/usr/bin/env python
"""Write the state-dict layout (name -> shape) of the official Depth Anything V2 model classes.

    python benchmarks/dump_dav2_keys.py --dav2-src /tmp/Depth-Anything-V2 \
        --out tests/models/data/dav2_official_keys.json

The official checkout is imported from `--dav2-src` (nothing of it is copied here): `DepthAnythingV2` of
`depth_anything_v2/dpt.py` (relative depth) and of `metric_depth/depth_anything_v2/dpt.py` (metric depth),
built with the size settings of the checkout's own `run.py` (its `model_configs` literal, read with `ast`).
ViT-S is built on the CPU with its random initialisation; the larger sizes on the meta device (shapes only:
no memory, no init time). Nothing is downloaded: the DINOv2 code is the one the repository vendors.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dav2-src", type=Path, required=True, help="official Depth-Anything-V2 checkout")
    p.add_argument("--out", type=Path, required=True, help="the .json to write")
    return p.parse_args(argv)


def model_configs(run_py: Path) -> dict[str, dict[str, Any]]:
    """The `model_configs = {...}` literal of the official run.py."""
    for node in ast.walk(ast.parse(run_py.read_text())):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "model_configs" for t in node.targets
        ):
            configs: dict[str, dict[str, Any]] = ast.literal_eval(node.value)
            return configs
    raise SystemExit(f"{run_py}: no model_configs literal")


@contextmanager
def package_from(root: Path) -> Iterator[Any]:
    """Import `depth_anything_v2.dpt` from `root`, then forget it (the metric copy has the same name)."""
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("depth_anything_v2.dpt")
    finally:
        sys.path.remove(str(root))
        for name in [
            n for n in sys.modules if n == "depth_anything_v2" or n.startswith("depth_anything_v2.")
        ]:
            del sys.modules[name]


def layout(model: Any) -> list[list[Any]]:
    """[name, shape, dtype] per tensor of the state dict, in its order."""
    return [[k, list(t.shape), str(t.dtype).removeprefix("torch.")] for k, t in model.state_dict().items()]


@contextmanager
def on_meta() -> Iterator[None]:
    """Build on the meta device; DINOv2's drop-path schedule (`torch.linspace(...)` read with `.item()`)
    is computed on the CPU, since a meta tensor has no value."""
    import torch

    linspace = torch.linspace
    torch.linspace = lambda *a, **k: linspace(*a, **{**k, "device": "cpu"})  # type: ignore[assignment]
    try:
        with torch.device("meta"):
            yield
    finally:
        torch.linspace = linspace


def git_commit(src: Path) -> str:
    out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    src = args.dav2_src.resolve()
    configs = model_configs(src / "run.py")
    models: dict[str, list[list[Any]]] = {}
    for variant, root in (("relative", src), ("metric", src / "metric_depth")):
        with package_from(root) as dpt:
            for size, cfg in configs.items():
                if variant == "metric" and size != "vits":
                    continue  # the metric class differs only in its head's activation: one size is enough
                torch.manual_seed(0)
                if size == "vits":
                    model = dpt.DepthAnythingV2(**cfg)
                else:
                    with on_meta():
                        model = dpt.DepthAnythingV2(**cfg)
                models[f"{variant}/{size}"] = layout(model)
                print(f"{variant}/{size}: {len(models[variant + '/' + size])} tensors", flush=True)
    given = sys.argv[1:] if argv is None else argv
    meta = {
        "what": "state_dict (name, shape, dtype) of the official DepthAnythingV2 classes (no weights)",
        "official_repository": "https://github.com/DepthAnything/Depth-Anything-V2",
        "official_commit": git_commit(src),
        "command": "python benchmarks/dump_dav2_keys.py " + " ".join(given),
        "configs": configs,
        "classes": {
            "relative": "depth_anything_v2/dpt.py DepthAnythingV2(**model_configs[size])",
            "metric": "metric_depth/depth_anything_v2/dpt.py DepthAnythingV2(**model_configs[size])",
        },
        "torch": torch.__version__,
        "models": models,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, separators=(",", ":")) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
