"""Synthetic labelled faces: the project's embedded default data set.

A parametric 3D head (68 iBUG landmarks as mesh vertices) with identity and expression
modes, procedural skin, eyes, teeth, hair, clothes and accessories, posed, lit and
rendered with OpenGL (Mesa's llvmpipe on a CPU) over photographic or procedural
backgrounds, with occluders, blur, noise, colour casts and JPEG artefacts. See generate.make_face and
dataset.generate_folder; tools/make_synthetic.py is the command line.
"""
from .generate import SynthConfig, SyntheticFace, make_face
from .dataset import generate_folder, item_name, montage

__all__ = ["SynthConfig", "SyntheticFace", "make_face", "generate_folder", "item_name", "montage"]
