"""Input data: image preprocessing (VGGT's and VGGT-Ω's official loaders, fixed-shape fitting), BlendedMVS
scenes (pfm, cams, view groups), synthetic ray-cast scenes, and calibration samples at a program's shape.

Modules are imported directly; this file stays empty so `import vggt_et.data` costs nothing.
Imports: `vggt_et.options` (ProgramShape) and `vggt_et.utils`; never the model, the pipeline or a runtime.
"""
