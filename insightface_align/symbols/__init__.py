"""MXNet symbol builders for the SDU network zoo (blocks, topologies, stacks, heads)."""
from .config import NetConfig

__all__ = ["NetConfig"]
