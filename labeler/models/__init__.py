"""Neural network modules: DINOv2 + DPT (Depth Anything V2 layout) and FoundationStereo.

Importing this package imports nothing heavy; import the submodules you need
(`labeler.models.dinov2_dpt`, `labeler.models.foundation_stereo`).
"""
