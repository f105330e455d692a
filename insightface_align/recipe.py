"""Recipes: one YAML file per trainable configuration under recipes/.

A recipe names its parent with `base:` and overrides only what differs (deep merge),
so the paper's training settings live once in recipes/base.yaml. Sections:
  network: NetConfig fields (symbols/config.py)
  loss, train, data: read by the loss, trainer and iterator configs
  paper: the Table 1 row this recipe reproduces (row name, size_mb, ibug, cofw)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Optional, Tuple
from pathlib import Path

import yaml

from insightface_align.symbols.config import FORMER_FIELDS, NetConfig

from .data.photometric import Photometric
from .errors import ConfigError
from .fields import typed_fields
from .losses import LossConfig
from .train_config import TrainConfig

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
SECTIONS = ("description", "base", "network", "loss", "train", "data", "paper")


@dataclass(frozen=True)
class DataSection:
    """The keys a recipe's `data` section may hold (train.data_config reads them)."""

    mode: str = "2d"            # 2d or 3d: which packed sets the recipe is meant for
    sigma: float = 1.0          # Gaussian target sigma in heatmap pixels
    occluded_sigma: Optional[float] = None  # sigma of points the records flag occluded (None: sigma)
    convention: str = "centred"  # crop and target convention: centred or release (geometry.py)
    rotate: float = 40.0        # random rotation range, degrees
    scale: Tuple[float, float] = (0.8, 1.2)
    translate: float = 0.0      # random shift, fraction of the crop
    flip: bool = True
    photometric: Optional[dict] = None  # data/photometric.py
    val_sets: tuple = ("test",)  # packed test sets evaluated during training


@dataclass(frozen=True)
class PaperSection:
    """Where the recipe sits in the paper: Table 1 row and model size."""

    row: Optional[str] = None       # Table 1 row name, e.g. "DLA2-CAB"
    size_mb: Optional[float] = None  # the paper's model size
    ibug: Optional[float] = None     # the paper's NME (%) on IBUG
    cofw: Optional[float] = None     # the paper's NME (%) on COFW
    release_size_mb: Optional[float] = None  # size of the release's own checkpoint, where it differs


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    network: NetConfig
    loss: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    paper: dict = field(default_factory=dict)
    path: str = ""


def recipe_names(directory: Path = RECIPE_DIR) -> list:
    """Every recipe except the abstract base, in file-name order."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml") if p.stem != "base")


def _resolve_path(name_or_path, directory: Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    # A name is looked up beside the recipe that names it, then among the packaged recipes.
    for folder in dict.fromkeys((Path(directory), RECIPE_DIR)):
        candidate = folder / f"{name_or_path}.yaml"
        if candidate.exists():
            return candidate
    raise ConfigError("recipe", f"no recipe {name_or_path!r}; known: {', '.join(recipe_names(directory))}")


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _raw(name_or_path, directory: Path, seen: tuple = ()) -> tuple:
    path = _resolve_path(name_or_path, directory)
    if path.resolve() in seen:
        raise ConfigError("base", f"recipe inheritance loops through {path}")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError("recipe", f"{path}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise ConfigError("recipe", f"{path}: expected a mapping of sections")
    unknown = sorted(set(doc) - set(SECTIONS))
    if unknown:
        raise ConfigError(unknown[0], f"{path}: unknown recipe section; known: {', '.join(SECTIONS)}")
    base = doc.pop("base", None)
    if base:
        parent, _ = _raw(base, Path(path).parent, seen + (path.resolve(),))
        doc = _merge(parent, doc)
    return doc, path


def load_recipe(name_or_path, directory: Path = RECIPE_DIR, **network_overrides) -> Recipe:
    """Load and validate a recipe by name (recipes/NAME.yaml) or by path."""
    former = sorted(set(network_overrides) & set(FORMER_FIELDS))
    if former:
        raise ConfigError(former[0], "the operators are not part of a recipe: pass them when the graph is built "
                                     "(symbols/backend.py; the train command's --dcn-impl / --mean-impl)")
    doc, path = _raw(name_or_path, Path(directory))
    net = dict(doc.get("network") or {})
    net.update(network_overrides)
    for section in ("loss", "train", "data", "paper"):
        if not isinstance(doc.get(section, {}) or {}, dict):
            raise ConfigError(section, f"{path}: section must be a mapping")
    if not net:
        raise ConfigError("network", f"{path}: the recipe (with its bases) defines no network")
    # Every section is type-checked here, so a wrong value names its field before any work.
    typed_fields(NetConfig, {k: v for k, v in net.items() if k not in FORMER_FIELDS}, "network")
    loss = typed_fields(LossConfig, doc.get("loss") or {}, "loss")
    train = typed_fields(TrainConfig, doc.get("train") or {}, "train")
    data = typed_fields(DataSection, doc.get("data") or {}, "data")
    Photometric.from_dict(data.get("photometric"))  # its probabilities, checked now
    paper = typed_fields(PaperSection, doc.get("paper") or {}, "paper")
    description = doc.get("description", "")
    if not isinstance(description, str):
        raise ConfigError("description", f"{path}: expected text")
    return Recipe(name=Path(path).stem, description=description.strip(),
                  network=NetConfig.from_dict(net), loss=loss, train=train, data=data, paper=paper,
                  path=str(path))
