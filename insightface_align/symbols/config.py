"""NetConfig: everything that decides a graph's structure, validated at build time.

Field names map onto the original release's config keys (net_stacks, net_n,
net_block, net_sta, net_dcn, multiplier, input_img_size, output_label_size) so a
release config translates one to one; see `NetConfig.from_release`. Which operators
run it (the execution backend) is not part of it: symbols/backend.py chooses them
when a graph is built, so a saved config runs anywhere.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from insightface_align.errors import ConfigError, reject_unknown_fields

BLOCKS = ("resnet", "inception", "hpm", "cab")
TOPOLOGIES = ("hourglass", "unet", "dla", "sat1", "sat2", "sat3")
INSIDE = ("none", "dcn", "stn")
# Keys older checkpoints' configs hold that are no longer architecture (the operator
# choice, now symbols/backend.py): ignored when read.
FORMER_FIELDS = ("dcn_impl", "mean_impl")


@dataclass(frozen=True)
class NetConfig:
    """Structure of one stacked network.

    topology: hourglass | unet | dla | sat1 (full SAT, Fig. 2d) | sat2 (SAT with one
      down-sampling step removed, Fig. 2e) | sat3 (simplified dense U-Net, Fig. 2f;
      the release's net_sta=1).
    depth: down-sampling steps inside each stack (release net_n; 4 hourglass, 3 SAT(III)).
    dcn: inside transformer as deformable convs (release net_dcn): 0 none, 1 between
      stacks, 2 ll + heatmap heads, 3 both (the paper's model).
    stn: True puts a spatial transformer before the stacks (paper Fig. 4a).
    """

    num_classes: int = 68
    stacks: int = 2
    depth: int = 4
    block: str = "resnet"
    topology: str = "hourglass"
    dcn: int = 0
    stn: bool = False
    input_size: int = 128
    heatmap_size: int = 64
    multiplier: float = 1.0

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        if self.block not in BLOCKS:
            raise ConfigError("block", f"unknown block {self.block!r}; choose one of {', '.join(BLOCKS)}")
        if self.topology not in TOPOLOGIES:
            raise ConfigError("topology", f"unknown topology {self.topology!r}; choose one of {', '.join(TOPOLOGIES)}")
        if not isinstance(self.dcn, int) or self.dcn not in (0, 1, 2, 3):
            raise ConfigError("dcn", f"must be 0, 1, 2 or 3, got {self.dcn!r}")
        if not isinstance(self.stacks, int) or self.stacks < 1:
            raise ConfigError("stacks", f"must be a positive integer, got {self.stacks!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ConfigError("num_classes", f"must be a positive integer, got {self.num_classes!r}")
        if not (isinstance(self.multiplier, (int, float)) and 0 < self.multiplier <= 4):
            raise ConfigError("multiplier", f"must be in (0, 4], got {self.multiplier!r}")
        if self.heatmap_size not in (32, 64) and not (isinstance(self.heatmap_size, int) and self.heatmap_size > 0):
            raise ConfigError("heatmap_size", f"must be a positive integer, got {self.heatmap_size!r}")
        ratio = self.input_size / self.heatmap_size if self.heatmap_size else 0
        if ratio not in (2, 4):
            raise ConfigError("input_size", f"must be 2x or 4x heatmap_size ({self.heatmap_size}); got {self.input_size}")
        if not isinstance(self.depth, int) or self.depth < 1:
            raise ConfigError("depth", f"must be a positive integer, got {self.depth!r}")
        if self.heatmap_size % (2 ** self.depth) != 0:
            raise ConfigError("depth", f"{self.depth} down-sampling steps do not divide heatmap_size {self.heatmap_size}")
        if self.stn and self.dcn:
            raise ConfigError("stn", "choose one inside transformer: stn=True with dcn>0 is not a paper configuration")

    @property
    def widths(self) -> tuple:
        """(s, mid, n) channel widths as the release computed them."""
        m = self.multiplier
        return max(int(64 * m), 32), max(int(128 * m), 32), int(256 * m)

    def replace(self, **changes) -> "NetConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "NetConfig":
        """From to_dict()'s output (or a recipe's network section); the former operator
        fields (FORMER_FIELDS) of older checkpoints are ignored."""
        values = {k: v for k, v in values.items() if k not in FORMER_FIELDS}
        reject_unknown_fields(cls, values)
        return cls(**values)

    @classmethod
    def from_release(cls, cfg: dict) -> "NetConfig":
        """Translate a release config (net_stacks, net_n, net_sta, ...) to a NetConfig."""
        sta = int(cfg.get("net_sta", 0))
        return cls(
            num_classes=int(cfg.get("num_classes", 68)),
            stacks=int(cfg["net_stacks"]),
            depth=int(cfg["net_n"]),
            block=cfg["net_block"],
            topology="sat3" if sta > 0 else "hourglass",
            dcn=int(cfg.get("net_dcn", 0)),
            input_size=int(cfg.get("input_img_size", 128)),
            heatmap_size=int(cfg.get("output_label_size", 64)),
            multiplier=float(cfg.get("multiplier", 1.0)),
        )
