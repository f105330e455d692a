"""insightface-align: Stacked Dense U-Nets with Dual Transformers for face alignment.

Data flows one way: files (datasets/) -> records (data/record.py) -> batches
(data/iterator) -> graph (symbols/) -> loss -> checkpoint -> metrics.
"""
__version__ = "0.1.0"


def __getattr__(name):
    """`insightface_align.Aligner` without importing MXNet for every submodule user."""
    if name == "Aligner":
        from .aligner import Aligner

        return Aligner
    raise AttributeError(name)
