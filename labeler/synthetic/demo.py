"""`labeler demo`: synthetic Arducam-style captures with known truth, so the whole pipeline runs offline.

Writes, under OUT:
  boards/board_NNN.png   side-by-side 2W x H chessboard captures (9x6 inner corners, 30 mm squares)
  scenes/scene_NNN.png   side-by-side captures of textured objects at known depths
  truth/truth.json       DemoTruth (data_schema/demo.py): the true calibration (intrinsics, distortion,
                         R, T) and, per scene, per object: median depth of its visible left pixels
  truth/scene_NNN.npz    left-camera depth_m (float32, inf = nothing) and instance_ids (int32)
  sequence/walk.avi      a moving side-by-side sequence (labeler/synthetic/sequence.py), its truth in
                         truth/sequence.json and truth/sequence/frame_NNNNNN.npz
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_schema.calibration import BoardSpec
from data_schema.demo import DemoTruth, ObjectTruth, RigTruth, SceneTruth
from labeler.io import atomic_path, write_png, write_text_atomic
from labeler.synthetic import Scene, SyntheticRig, TexturedRect, noise_texture, render_board_views, rotation

DEMO_BOARD = BoardSpec(kind="chessboard", cols=9, rows=6, square_m=0.03)


def rig_truth(rig: SyntheticRig) -> RigTruth:
    return RigTruth(
        K_left=rig.left.K.tolist(),
        dist_left=rig.left.dist.tolist(),
        K_right=rig.right.K.tolist(),
        dist_right=rig.right.dist.tolist(),
        R=rig.R.tolist(),
        T=rig.T.tolist(),
        baseline_m=rig.baseline_m,
        image_size=list(rig.left.size),
    )


RGB = tuple[int, int, int]


def _rgb(values: np.ndarray) -> RGB:
    r, g, b = (int(v) for v in values)
    return r, g, b


def demo_scene(rng: np.random.Generator, *, n_objects: int = 3) -> tuple[Scene, list[RGB]]:
    """A wall, a floor and `n_objects` textured boards at different depths; objects 1 and 2 share a colour."""
    wall_z = rng.uniform(3.2, 4.0)
    rects = [
        TexturedRect(
            np.array([0.0, 0.0, wall_z]),
            np.array([1.0, 0, 0]),
            np.array([0, 1.0, 0]),
            (-5, 5, -3, 0.6),
            noise_texture(rng, 512, (170, 160, 140), 40),
        ),
        TexturedRect(
            np.array([0.0, 0.6, 0.0]),
            np.array([1.0, 0, 0]),
            np.array([0, 0, 1.0]),
            (-5, 5, 0.3, wall_z),
            noise_texture(rng, 512, (110, 100, 90), 35),
        ),
    ]
    shared = _rgb(rng.integers(60, 200, 3))
    depths = np.sort(rng.uniform(0.9, 2.6, n_objects))
    colours = []
    for i, z in enumerate(depths, start=1):
        base = shared if i <= 2 else _rgb(rng.integers(40, 220, 3))
        colours.append(base)
        w, h = rng.uniform(0.22, 0.4) * z / 1.5 + 0.1, rng.uniform(0.2, 0.35) * z / 1.5 + 0.1
        # spread across the view, with a little yaw so depth varies over the face
        x = (-0.35 + 0.7 * (i - 1) / max(1, n_objects - 1)) * z * 0.75 + rng.uniform(-0.05, 0.05)
        y = rng.uniform(-0.15, 0.1) * z
        r = rotation(0.0, rng.uniform(-0.25, 0.25), 0.0)
        rects.append(
            TexturedRect(
                np.array([x, y, z]),
                r[:, 0],
                r[:, 1],
                (-w / 2, w / 2, -h / 2, h / 2),
                noise_texture(rng, 256, base, 55),
                instance_id=i,
            )
        )
    return Scene(rects), colours


def write_demo(
    out: str | Path,
    *,
    n_boards: int = 14,
    n_scenes: int = 4,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    sequence_frames: int = 0,
) -> DemoTruth:
    """Render the demo rig's board and scene captures into `out` (see the module docstring)."""
    out = Path(out)
    rig = SyntheticRig.arducam_like(width, height)
    rays = rig.left.rays(3), rig.right.rays(3)  # boards and scenes: the same cameras, 3x3 samples
    boards = render_board_views(rig, DEMO_BOARD, n_boards, seed=seed, supersample=3, rays=rays)
    for i, (board_left, board_right) in enumerate(boards):
        write_png(out / "boards" / f"board_{i:03d}.png", np.hstack([board_left, board_right]))
    rng = np.random.default_rng(seed + 1000)
    scenes = []
    for i in range(n_scenes):
        pair_id = f"scene_{i:03d}"
        scene, colours = demo_scene(rng)
        left, right = scene.render_views(
            list(zip((rig.left, rig.right), rays, strict=True)), noise_dn=1.0, rng=rng
        )
        write_png(out / "scenes" / f"{pair_id}.png", np.hstack([left.image, right.image]))
        with atomic_path(out / "truth" / f"{pair_id}.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, depth_m=left.depth_m, instance_ids=left.instance_ids)
        objects = []
        for oid, base in enumerate(colours, start=1):
            sel = left.instance_ids == oid
            if sel.any():
                objects.append(
                    ObjectTruth(
                        id=oid,
                        depth_m_median=float(np.median(left.depth_m[sel])),
                        area_px=int(sel.sum()),
                        base_rgb=base,
                    )
                )
        scenes.append(SceneTruth(pair_id=pair_id, objects=objects))
    if sequence_frames:
        from labeler.synthetic.sequence import write_demo_sequence

        write_demo_sequence(out, rig, n_frames=sequence_frames, seed=seed)
    truth = DemoTruth(rig=rig_truth(rig), scenes=scenes)
    write_text_atomic(out / "truth" / "truth.json", truth.model_dump_json(indent=2))
    return truth


def load_demo_truth(out: str | Path) -> DemoTruth:
    return DemoTruth.model_validate_json((Path(out) / "truth" / "truth.json").read_text())


def write_middlebury(out: str | Path) -> Path:
    """The real Middlebury 2014 Motorcycle pair that scikit-image ships (741x500, already rectified):
    `OUT/middlebury/motorcycle_{left,right}.png` for `labeler run` with calib/middlebury-motorcycle.yaml,
    and its ground-truth disparity `OUT/truth/motorcycle_disparity_px.npy` (float32, NaN invalid)."""
    from skimage import data

    out = Path(out)
    left, right, disparity = data.stereo_motorcycle()
    write_png(out / "middlebury" / "motorcycle_left.png", left)
    write_png(out / "middlebury" / "motorcycle_right.png", right)
    gt = np.where(np.isfinite(disparity), disparity, np.nan).astype(
        np.float32
    )  # skimage marks invalid as +inf
    with atomic_path(out / "truth" / "motorcycle_disparity_px.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, gt)
    return out / "middlebury"
