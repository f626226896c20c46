"""A ray-casting renderer for synthetic stereo rigs: the one generator of synthetic images with truth.

Every pixel's ray comes from `cv2.undistortPoints`, so the images carry the rig's exact distortion and
the truth (intrinsics, R, T, per-pixel depth, instance ids) is known. It renders calibration boards
(chessboard, ChArUco) and scenes of textured planar patches: through a distorted rig
(`SyntheticRig.arducam_like`) for `labeler demo` and the calibration tests, through an ideal rectified
rig (`SyntheticRig.rectified`, `fronto_parallel`, `render_pair`) for the rectified pairs with known
disparity that the backend conformance suites and the tests use (`labeler.testing.scenes`), and rooms of
several kinds (`room_pair`) on which instance proposals are measured.

World frame = the left camera frame (metres, x right, y down, z forward).
"""

from labeler.rig.boards import board_corners, charuco_board
from labeler.synthetic._boards import (
    Pose,
    board_scene,
    board_texture,
    board_visible,
    random_board_pose,
    render_board_views,
)
from labeler.synthetic._rig import Camera, SyntheticRig, rotation
from labeler.synthetic._rooms import ROOM_KINDS, room_pair, room_scene, two_tone_texture
from labeler.synthetic._scene import (
    RectifiedPair,
    Rendering,
    Scene,
    TexturedRect,
    fronto_parallel,
    render_pair,
)
from labeler.synthetic._textures import blurred_noise_texture, noise_texture

__all__ = [
    "ROOM_KINDS",
    "Camera",
    "Pose",
    "RectifiedPair",
    "Rendering",
    "Scene",
    "SyntheticRig",
    "TexturedRect",
    "blurred_noise_texture",
    "board_corners",
    "board_scene",
    "board_texture",
    "board_visible",
    "charuco_board",
    "fronto_parallel",
    "noise_texture",
    "random_board_pose",
    "render_board_views",
    "render_pair",
    "room_pair",
    "room_scene",
    "rotation",
    "two_tone_texture",
]
