"""insightface-align: Stacked Dense U-Nets with Dual Transformers for face alignment.

Data flows one way: files (datasets/) -> records (data/record.py) -> batches
(data/iterator) -> graph (symbols/) -> loss -> checkpoint -> metrics.
"""
__version__ = "0.1.0"
