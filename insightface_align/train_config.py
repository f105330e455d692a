"""The recipe's `train` section: optimisation and bookkeeping of a training run.

Its own module so recipes can type-check their `train` section without importing the
trainer (which imports recipes).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .errors import ConfigError
from .fields import typed_fields
from .heatmaps import DEFAULT_DECODER


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping (recipe section `train`, overridable on the command line)."""

    optimizer: str = "nadam"
    lr: float = 2.5e-4
    lr_steps: Tuple[int, ...] = (16000, 24000)
    lr_factor: float = 0.2
    max_steps: int = 30000
    batch_per_device: int = 20
    wd: float = 0.0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 0  # newest checkpoints kept in the run folder; 0 keeps every one
    val_every: int = 1000
    log_every: int = 20
    seed: int = 0
    num_workers: int = 2
    decoder: str = DEFAULT_DECODER
    max_loss: Optional[float] = None  # divergence bound: a heatmap loss above it stops training

    def __post_init__(self):
        if self.max_steps < 1:
            raise ConfigError("train.max_steps", "must be >= 1")
        if self.batch_per_device < 1:
            raise ConfigError("train.batch_per_device", "must be >= 1")
        steps = list(self.lr_steps)
        if steps != sorted(steps) or len(set(steps)) != len(steps) or any(s < 1 for s in steps):
            raise ConfigError("train.lr_steps", f"must be strictly increasing positive steps, got {steps}")
        if self.lr <= 0:
            raise ConfigError("train.lr", "must be > 0")
        if self.keep_checkpoints < 0 or self.keep_checkpoints == 1:
            raise ConfigError("train.keep_checkpoints", "must be 0 (keep every checkpoint) or >= 2, so that a "
                              f"damaged newest checkpoint leaves one to resume from; got {self.keep_checkpoints}")
        if self.max_loss is not None and not self.max_loss > 0:
            raise ConfigError("train.max_loss", "must be > 0 when given")

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        return cls(**typed_fields(cls, values, "train"))
