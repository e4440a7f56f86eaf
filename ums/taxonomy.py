"""Class taxonomies (``labels/*.yaml``) and the name-based mappings between them
(``labels/mappings.yaml``)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import yaml
from pydantic import BaseModel, Field, model_validator

from ums.core.resources import resource_dir

DATASET_TAXONOMY = "ums"  # the classes of every label a workspace stores

LABELS_DIR = resource_dir("labels")


class ClassInfo(BaseModel):
    id: int = Field(ge=0)
    name: str
    color: tuple[int, int, int] | None = None
    # other words for the class: an open-vocabulary detector may be prompted with any of them
    synonyms: list[str] = Field(default_factory=list)

    @property
    def words(self) -> list[str]:
        return [self.name, *self.synonyms]


class Taxonomy(BaseModel):
    name: str
    classes: list[ClassInfo]

    @model_validator(mode="after")
    def _unique(self) -> Taxonomy:
        ids = [c.id for c in self.classes]
        names = [c.name for c in self.classes]
        if len(set(ids)) != len(ids) or len(set(names)) != len(names):
            raise ValueError(f"taxonomy {self.name}: class ids and names must be unique")
        words = [word.casefold() for info in self.classes for word in info.words]
        if len(set(words)) != len(words):
            repeated = sorted({w for w in words if words.count(w) > 1})
            raise ValueError(f"taxonomy {self.name}: {', '.join(repeated)} names more than one class (names and synonyms)")
        return self

    @property
    def names(self) -> dict[int, str]:
        return {c.id: c.name for c in self.classes}

    def id_of(self, name: str) -> int:
        for info in self.classes:
            if info.name == name:
                return info.id
        raise KeyError(f"taxonomy {self.name} has no class {name!r}")

    def class_of_word(self, word: str) -> int | None:
        """The class a name or synonym stands for (case and surrounding spaces aside); None for other words."""
        wanted = " ".join(word.split()).casefold()
        for info in self.classes:
            if wanted in (w.casefold() for w in info.words):
                return info.id
        return None

    def vocabulary(self) -> str:
        """The classes with their synonyms, as an error message lists them."""
        return ", ".join(f"{c.name} ({', '.join(c.synonyms)})" if c.synonyms else c.name for c in self.classes)

    def palette(self) -> np.ndarray:
        """(max id + 2, 3) uint8 BGR colours for semantic previews (index 0: background)."""
        colours = np.zeros((max(self.names) + 2, 3), np.uint8)
        for info in self.classes:
            if info.color is not None:
                colours[info.id + 1] = info.color[::-1]
        return colours


@lru_cache(maxsize=None)
def load_taxonomy(name: str) -> Taxonomy:
    path = LABELS_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no taxonomy {name!r} in {LABELS_DIR} (known: {', '.join(shipped_taxonomies())})")
    return Taxonomy.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def shipped_taxonomies() -> list[str]:
    return sorted(p.stem for p in LABELS_DIR.glob("*.yaml") if p.stem != "mappings")


def taxonomy_with_names(names: dict[int, str]) -> str | None:
    """The shipped taxonomy whose class ids and names are exactly ``names`` (a model trained on it), if any."""
    wanted = {int(i): str(n) for i, n in names.items()}
    return next((name for name in shipped_taxonomies() if load_taxonomy(name).names == wanted), None)


class ClassMapping:
    """Source class id -> target class id (None: the class has no counterpart and is dropped)."""

    def __init__(self, source: Taxonomy, target: Taxonomy, by_name: dict[str, str]):
        self.source, self.target = source, target
        unknown = [n for n in by_name if n not in source.names.values()]
        missing = [n for n in by_name.values() if n not in target.names.values()]
        if unknown or missing:
            raise ValueError(f"mapping {source.name}->{target.name}: unknown source classes {unknown}, "
                             f"unknown target classes {missing}")
        self.table = {source.id_of(s): target.id_of(t) for s, t in by_name.items()}

    def __call__(self, source_id: int) -> int | None:
        return self.table.get(int(source_id))

    def map_array(self, source_ids: np.ndarray) -> np.ndarray:
        """Target ids, -1 where a class has no counterpart."""
        return np.array([self.table.get(int(i), -1) for i in source_ids], dtype=np.int64)


@lru_cache(maxsize=None)
def load_mapping(source: str, target: str) -> ClassMapping:
    mappings = yaml.safe_load((LABELS_DIR / "mappings.yaml").read_text(encoding="utf-8"))
    key = f"{source}->{target}"
    if key not in mappings:
        raise KeyError(f"labels/mappings.yaml has no {key} mapping (has: {', '.join(sorted(mappings))})")
    return ClassMapping(load_taxonomy(source), load_taxonomy(target), mappings[key])
