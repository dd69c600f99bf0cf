"""Image preprocessing, BlendedMVS reading and synthetic scenes.

Modules (import them directly; this file stays empty so `import vggt_et.data` costs nothing):
preprocess (official VGGT loader, fixed-shape fitting + PixelTransform), pfm, cams (cam.txt,
pair.txt), blendedmvs (scenes, view groups, load_group), synthetic (ray-cast scenes in the
BlendedMVS layout), calibration (groups for calibration, synthetic fallback), atomic (file writes).
"""
