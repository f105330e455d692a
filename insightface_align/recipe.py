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
from pathlib import Path

import yaml

from insightface_align.symbols.config import NetConfig

from .errors import ConfigError

RECIPE_DIR = Path(__file__).resolve().parent / "recipes"
SECTIONS = ("description", "base", "network", "loss", "train", "data", "paper")


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
    candidate = Path(directory) / f"{name_or_path}.yaml"
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
    doc, path = _raw(name_or_path, Path(directory))
    net = dict(doc.get("network") or {})
    net.update(network_overrides)
    for section in ("loss", "train", "data", "paper"):
        if not isinstance(doc.get(section, {}) or {}, dict):
            raise ConfigError(section, f"{path}: section must be a mapping")
    return Recipe(name=Path(path).stem, description=str(doc.get("description", "")).strip(),
                  network=NetConfig.from_dict(net), loss=dict(doc.get("loss") or {}),
                  train=dict(doc.get("train") or {}), data=dict(doc.get("data") or {}),
                  paper=dict(doc.get("paper") or {}), path=str(path))
