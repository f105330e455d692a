"""Readers for the benchmark formats; each yields FaceSample objects."""
from .aflw2000 import Aflw2000Reader
from .base import Reader, SkipSample
from .cofw import CofwReader
from .concat import ConcatReader
from .images import load_image
from .listfile import ListReader
from .sample import FaceSample
from .w300 import MenpoReader, W300Reader
from .w300lp import W300LPReader

__all__ = ["FaceSample", "Reader", "SkipSample", "load_image", "W300Reader", "MenpoReader",
           "CofwReader", "Aflw2000Reader", "W300LPReader", "ListReader", "ConcatReader"]
