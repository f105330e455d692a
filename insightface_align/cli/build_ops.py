"""Build (if needed) and load the compiled CPU operator library; see insightface_align/symbols/ext."""
from insightface_align.symbols.ext import main

__all__ = ["main"]
