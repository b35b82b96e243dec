"""Patch build: apply a diff to a copy of the tree, find changed functions, generate the patch
TU (references to target state rewritten to pointer slots), compile the .so, write the bundle.
"""

from .build import BuildResult, build_bundle, compile_flags
from .errors import BuildError
from .generate import GeneratedTU, Slot, generate_patch_tu

__all__ = ["BuildError", "BuildResult", "GeneratedTU", "Slot", "build_bundle", "compile_flags",
           "generate_patch_tu"]
