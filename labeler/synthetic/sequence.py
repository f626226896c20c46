"""`labeler demo`'s moving sequence: a side-by-side video of the demo rig with true object ids and depth.

Four textured boards before the demo's wall and floor, 10 frames a second:
  1 walks from 2.6 m towards the rig, to about 1.1 m;
  2 slides right along the top and leaves the view;
  3 enters from the left edge and stops;
  4 stands still at 2.0 m.
For a stretch of STILL_FRAMES frames nothing moves (the rig stands still: only the sensor noise differs),
then object 1 walks on. `labeler run OUT/sequence --track` labels it; the truth lets a benchmark count
identity switches and the still frames skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_schema.demo import FrameObjectTruth, FrameTruth, SequenceTruth
from labeler.io import atomic_path, write_text_atomic
from labeler.synthetic import Scene, SyntheticRig, TexturedRect, noise_texture

SEQUENCE_NAME = "walk"
FPS = 10.0
STILL_FRAMES = 8


def _board(
    centre: tuple[float, float, float], size: tuple[float, float], texture: np.ndarray, oid: int
) -> TexturedRect:
    w, h = size
    return TexturedRect(
        np.array(centre),
        np.array([1.0, 0, 0]),
        np.array([0, 1.0, 0]),
        (-w / 2, w / 2, -h / 2, h / 2),
        texture,
        instance_id=oid,
    )


def _positions(t: float) -> dict[int, tuple[float, float, float]]:
    """Object centres (x, y, z metres, left camera) at motion time t (s)."""
    return {
        1: (0.05, 0.1, 2.6 - 0.5 * t),  # walks towards the rig
        2: (-0.3 + 0.9 * t, -0.45, 1.9),  # slides right, out of the view
        3: (max(-1.3 + 0.35 * t, -1.3), 0.05, 1.6) if t < 2 else (-0.6, 0.05, 1.6),  # enters, stops
        4: (0.6, 0.15, 2.0),  # stands
    }


def write_demo_sequence(
    out: str | Path,
    rig: SyntheticRig,
    *,
    n_frames: int = 32,
    still_frames: int = STILL_FRAMES,
    seed: int = 0,
    supersample: int = 2,
) -> SequenceTruth:
    """Render the sequence into OUT/sequence/walk.avi (MJPG) and its truth (see the module docstring).
    The still stretch starts half-way: `still_frames` frames that each repeat the one before."""
    import cv2

    out = Path(out)
    rng = np.random.default_rng(seed + 2000)
    wall = TexturedRect(
        np.array([0.0, 0.0, 3.6]),
        np.array([1.0, 0, 0]),
        np.array([0, 1.0, 0]),
        (-5, 5, -3, 0.6),
        noise_texture(rng, 512, (170, 160, 140), 40),
    )
    floor = TexturedRect(
        np.array([0.0, 0.6, 0.0]),
        np.array([1.0, 0, 0]),
        np.array([0, 0, 1.0]),
        (-5, 5, 0.3, 3.6),
        noise_texture(rng, 512, (110, 100, 90), 35),
    )
    sizes = {1: (0.32, 0.5), 2: (0.3, 0.3), 3: (0.28, 0.36), 4: (0.3, 0.4)}
    colours = {1: (200, 60, 50), 2: (60, 170, 70), 3: (60, 80, 200), 4: (200, 190, 60)}
    textures = {i: noise_texture(rng, 256, colours[i], 55) for i in sizes}
    still_from = n_frames // 2
    rays = rig.left.rays(supersample), rig.right.rays(supersample)
    w, h = rig.left.size
    video = out / "sequence" / f"{SEQUENCE_NAME}.avi"
    video.parent.mkdir(parents=True, exist_ok=True)
    frames = []
    with atomic_path(video) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), FPS, (2 * w, h))
        t_motion = 0.0
        for k in range(n_frames):
            still = still_from <= k < still_from + still_frames
            if k and not still:
                t_motion += 1 / FPS
            pos = _positions(t_motion)
            scene = Scene([wall, floor, *(_board(pos[i], sizes[i], textures[i], i) for i in sorted(pos))])
            left, right = scene.render_views(
                list(zip((rig.left, rig.right), rays, strict=True)),
                supersample=supersample,
                noise_dn=1.0,
                rng=rng,
            )
            writer.write(cv2.cvtColor(np.hstack([left.image, right.image]), cv2.COLOR_RGB2BGR))
            with atomic_path(out / "truth" / "sequence" / f"frame_{k:06d}.npz") as npz, open(npz, "wb") as f:
                np.savez_compressed(f, depth_m=left.depth_m, instance_ids=left.instance_ids)
            objects = [
                FrameObjectTruth(
                    id=i, depth_m_median=float(np.median(left.depth_m[sel])), area_px=int(sel.sum())
                )
                for i in sorted(pos)
                if (sel := left.instance_ids == i).any()
            ]
            frames.append(FrameTruth(frame=k, timestamp_s=k / FPS, still=still, objects=objects))
        writer.release()
    truth = SequenceTruth(video=str(video.relative_to(out)), fps=FPS, frames=frames)
    write_text_atomic(out / "truth" / "sequence.json", truth.model_dump_json(indent=1))
    return truth


def load_sequence_truth(out: str | Path) -> SequenceTruth:
    return SequenceTruth.model_validate_json((Path(out) / "truth" / "sequence.json").read_text())
