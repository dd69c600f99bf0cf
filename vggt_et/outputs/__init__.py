"""What a program's outputs become: running a .pte on images (inference.py), the geometry from pose encodings
to cameras and point clouds (geometry.py), depth PNGs and PLY files (visualize.py, geometry.py), and the
output folders vggt-et owns (folder.py).

Imports: runtime (to run programs), data (images), options and utils; never the pipeline or the model.
"""
