"""Test-only stand-ins that let the official SAM 3 video model run on a CPU machine (the product runs it
on CUDA only; labeler/segment/sam3_video.py says why). Each replaces one CUDA-only step with what it does
when the model, its state and its data are already on the CPU, and is undone when the test ends."""

from __future__ import annotations

from typing import Any

import pytest


def run_video_model_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Within one test: the official video model runs on the CPU, and labeler lets it."""
    import sam3.perflib.connected_components as cc
    import torch
    from sam3.model.sam3_tracking_predictor import Sam3TrackerPredictor

    from labeler.segment import sam3_video

    # The tracker moves memory features to the GPU with hard .cuda() calls (sam3_tracker_base.py:657,
    # 664): everything is on the CPU already, so staying put is what .cuda() would achieve there.
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
    # The video model opens tracker sessions without `offload_state_to_cpu`, which stores their state
    # on torch.device("cuda") (sam3_tracking_predictor.py:81): store it on the CPU, where the model is.
    init_state = Sam3TrackerPredictor.init_state

    def cpu_state(self: Any, *args: Any, **kwargs: Any) -> Any:
        return init_state(self, *args, **{**kwargs, "offload_state_to_cpu": True})

    monkeypatch.setattr(Sam3TrackerPredictor, "init_state", cpu_state)
    # The CPU connected components (skimage, used by the hole filling on every frame) cannot take an
    # empty batch, which a frame without new detections gives it (torch.stack of no tensors); the GPU
    # kernels return empty labels and counts for it.
    components = cc.connected_components_cpu

    def empty_ok(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape[0] == 0:
            return torch.zeros_like(x, dtype=torch.long), torch.zeros_like(x, dtype=torch.long)
        return components(x)

    monkeypatch.setattr(cc, "connected_components_cpu", empty_ok)
    monkeypatch.setattr(sam3_video, "video_model_problem", lambda device: None)
