"""Job configuration: TOML files parsed and validated once into typed objects.

A config file has the sections ``[job]``, ``[inputs]``, ``[layers]``, ``[processing]``,
``[detection]`` and a list of ``[[rules]]``. Unknown keys, wrong types and missing fields
raise :class:`~imagery_watch.errors.ConfigError` naming the key's path (``rules[2].after``)
and the fix. Relative paths are resolved against the folder of the config file.

Stages never receive the whole config: the pipeline hands each stage the plain keyword
arguments it needs.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .classes import LandCover
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

#: where a rule may fire, relative to the farmland layer
WHERE_VALUES = ("farmland", "outside_farmland", "anywhere")

#: band names accepted in ``inputs.bands``
BAND_NAMES = ("red", "green", "blue", "nir", "ignore")


@dataclass(frozen=True)
class Rule:
    """One transition rule: which class change, where, and the minimum mapping unit.

    Attributes
    ----------
    name : str
        Rule identifier written to each patch (``construction_on_farmland``...).
    before, after : frozenset of LandCover
        Classes allowed before and after the change.
    where : {"farmland", "outside_farmland", "anywhere"}
        Location constraint against the farmland layer.
    min_area_m2 : float
        Minimum mapping unit: smaller patches are dropped.
    description : str
        Free text for reports.
    """

    name: str
    before: frozenset
    after: frozenset
    where: str = "anywhere"
    min_area_m2: float = 200.0
    description: str = ""


@dataclass(frozen=True)
class LayerRef:
    """A vector layer: a file path, a layer name inside it, and an optional name field."""

    path: Path
    layer: str | None = None
    name_field: str | None = None


@dataclass(frozen=True)
class JobSection:
    name: str = "job"
    out: Path = Path("out")
    epoch_before: str = "before"
    epoch_after: str = "after"


@dataclass(frozen=True)
class InputsSection:
    before: Path
    after: Path
    bands: tuple = ("red", "green", "blue")
    area_of_interest: LayerRef | None = None


@dataclass(frozen=True)
class LayersSection:
    farmland: LayerRef | None = None
    approved: LayerRef | None = None
    counties: LayerRef | None = None
    landuse: LayerRef | None = None


@dataclass(frozen=True)
class ProcessingSection:
    chunk_px: int = 2048
    workers: int = 0
    scheduler: str = ""
    crs: str = ""
    pixel_size_m: float = 0.0
    max_shift_px: float = 4.0
    gdal_cachemax_mb: int = 256


@dataclass(frozen=True)
class DetectionSection:
    model: Path | None = None
    sensitivity: float = 1.0
    building_check: str = "off"


@dataclass(frozen=True)
class Config:
    """A validated job configuration."""

    job: JobSection
    inputs: InputsSection
    layers: LayersSection
    processing: ProcessingSection
    detection: DetectionSection
    rules: tuple
    source: Path | None = None

    def replace(self, section: str, **changes: Any) -> "Config":
        """Return a copy with ``changes`` applied to one section (CLI overrides)."""
        sec = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(sec, **changes)})

    def rule_names(self) -> tuple:
        """Names of the rules in config order."""
        return tuple(r.name for r in self.rules)


# --------------------------------------------------------------------------------------
# parsing


class _Reader:
    """Walks a parsed TOML table, checking keys and types with the key path in errors."""

    def __init__(self, table: Mapping, path: str, base_dir: Path, source: str):
        self.table = dict(table)
        self.path = path
        self.base_dir = base_dir
        self.source = source
        self.used: set = set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.source}: {self._name(key)}: {msg}")

    def get(self, key: str, kind: type | tuple, default: Any = dataclasses.MISSING) -> Any:
        self.used.add(key)
        if key not in self.table:
            if default is dataclasses.MISSING:
                raise self.fail(key, "missing required field; add it to the config")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise self.fail(key, f"expected {_kind_names(kinds)}, found a boolean ({value!r})")
        if not isinstance(value, kinds):
            raise self.fail(key, f"expected {_kind_names(kinds)}, found {type(value).__name__} ({value!r})")
        return value

    def path_value(self, key: str, default: Any = dataclasses.MISSING) -> Path | None:
        raw = self.get(key, str, default)
        if raw is None or raw == "":
            return None if raw is None or default is None else Path(raw)
        p = Path(raw).expanduser()
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    def layer(self, key: str, default: Any = None) -> LayerRef | None:
        self.used.add(key)
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, str):
            return _parse_layer_string(value, self.base_dir)
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a path string or a table {{path = ..., layer = ...}}, found {value!r}")
        sub = _Reader(value, self._name(key), self.base_dir, self.source)
        ref = LayerRef(
            path=sub.path_value("path"),
            layer=sub.get("layer", str, None),
            name_field=sub.get("name_field", str, None),
        )
        sub.finish()
        return ref

    def section(self, key: str) -> "_Reader":
        self.used.add(key)
        value = self.table.get(key, {})
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected a table [{key}], found {type(value).__name__}")
        return _Reader(value, self._name(key), self.base_dir, self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            key = unknown[0]
            known = ", ".join(sorted(self.used)) or "(none)"
            raise self.fail(key, f"unknown key; known keys here are: {known}. Check the spelling or remove it")


def _kind_names(kinds: tuple) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true/false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _parse_layer_string(value: str, base_dir: Path) -> LayerRef:
    """``"file.gpkg:layer"`` or ``"file.gpkg"``."""
    path, layer = value, None
    if ":" in value and not (len(value) > 1 and value[1] == ":" and value.count(":") == 1):
        path, _, layer = value.rpartition(":")
    p = Path(path).expanduser()
    return LayerRef(path=p if p.is_absolute() else (base_dir / p).resolve(), layer=layer or None)


def _parse_classes(reader: _Reader, key: str) -> frozenset:
    values = reader.get(key, list)
    if not values:
        raise reader.fail(key, "expected a non-empty list of classes, e.g. [\"low_vegetation\", \"bare\"]")
    out = set()
    for v in values:
        if not isinstance(v, str):
            raise reader.fail(key, f"expected class names (strings), found {v!r}")
        try:
            out.add(LandCover.from_label(v))
        except ValueError as exc:
            raise reader.fail(key, str(exc)) from None
    return frozenset(out)


def _parse_rule(raw: Any, index: int, base_dir: Path, source: str) -> Rule:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: rules[{index}]: expected a table [[rules]], found {raw!r}")
    r = _Reader(raw, f"rules[{index}]", base_dir, source)
    name = r.get("name", str)
    if not name.isidentifier():
        raise r.fail("name", f"rule names are identifiers like construction_on_farmland, found {name!r}")
    where = r.get("where", str, "anywhere")
    if where not in WHERE_VALUES:
        raise r.fail("where", f"expected one of {', '.join(WHERE_VALUES)}, found {where!r}")
    min_area = r.get("min_area_m2", float, 200.0)
    if min_area < 0:
        raise r.fail("min_area_m2", f"must be >= 0, found {min_area}")
    rule = Rule(
        name=name,
        before=_parse_classes(r, "before"),
        after=_parse_classes(r, "after"),
        where=where,
        min_area_m2=min_area,
        description=r.get("description", str, ""),
    )
    r.finish()
    return rule


def parse_config(data: Mapping, *, base_dir: Path | str = ".", source: str = "<config>") -> Config:
    """Validate a parsed TOML mapping into a :class:`Config`.

    Parameters
    ----------
    data : mapping
        The parsed TOML document.
    base_dir : path
        Folder against which relative paths are resolved.
    source : str
        Name used in error messages (the file path).

    Raises
    ------
    ConfigError
        On an unknown key, a wrong type or a missing field; the message names the key path.
    """
    base_dir = Path(base_dir)
    top = _Reader(data, "", base_dir, source)

    j = top.section("job")
    job = JobSection(
        name=j.get("name", str, "job"),
        out=j.path_value("out", "out"),
        epoch_before=str(j.get("epoch_before", (str, int), "before")),
        epoch_after=str(j.get("epoch_after", (str, int), "after")),
    )
    j.finish()

    i = top.section("inputs")
    bands = tuple(i.get("bands", list, ["red", "green", "blue"]))
    for b in bands:
        if b not in BAND_NAMES:
            raise i.fail("bands", f"unknown band name {b!r}; use {', '.join(BAND_NAMES)}")
    for needed in ("red", "green", "blue"):
        if bands.count(needed) != 1:
            raise i.fail("bands", f"the band list must name {needed!r} exactly once, found {list(bands)}")
    if bands.count("nir") > 1:
        raise i.fail("bands", "name 'nir' at most once")
    inputs = InputsSection(
        before=i.path_value("before"),
        after=i.path_value("after"),
        bands=bands,
        area_of_interest=i.layer("area_of_interest"),
    )
    i.finish()

    lay = top.section("layers")
    layers = LayersSection(
        farmland=lay.layer("farmland"),
        approved=lay.layer("approved"),
        counties=lay.layer("counties"),
        landuse=lay.layer("landuse"),
    )
    lay.finish()

    p = top.section("processing")
    processing = ProcessingSection(
        chunk_px=p.get("chunk_px", int, 2048),
        workers=p.get("workers", int, 0),
        scheduler=p.get("scheduler", str, ""),
        crs=p.get("crs", str, ""),
        pixel_size_m=p.get("pixel_size_m", float, 0.0),
        max_shift_px=p.get("max_shift_px", float, 4.0),
        gdal_cachemax_mb=p.get("gdal_cachemax_mb", int, 256),
    )
    if not 128 <= processing.chunk_px <= 16384:
        raise p.fail("chunk_px", f"expected 128..16384 pixels, found {processing.chunk_px}")
    if processing.workers < 0:
        raise p.fail("workers", f"expected >= 0 (0 = one per core), found {processing.workers}")
    if processing.pixel_size_m < 0:
        raise p.fail("pixel_size_m", "expected > 0, or 0 to use the before-epoch's pixel size")
    p.finish()

    d = top.section("detection")
    model = d.path_value("model", None)
    detection = DetectionSection(model=model, sensitivity=d.get("sensitivity", float, 1.0),
                                 building_check=d.get("building_check", str, "off"))
    if not 0.1 <= detection.sensitivity <= 10:
        raise d.fail("sensitivity", f"expected 0.1..10 (1 = default), found {detection.sensitivity}")
    if detection.building_check not in ("off", "buildings", "construction"):
        raise d.fail("building_check", f'expected "off", "buildings" or "construction", found '
                                       f'{detection.building_check!r}')
    d.finish()

    top.used.add("rules")
    raw_rules = data.get("rules")
    if raw_rules is None:
        raise ConfigError(f"{source}: rules: missing; add at least one [[rules]] table")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise ConfigError(f"{source}: rules: expected a non-empty list of [[rules]] tables")
    rules = tuple(_parse_rule(r, k, base_dir, source) for k, r in enumerate(raw_rules))
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{source}: rules: rule name {dupes[0]!r} appears twice; names must be unique")
    if len(rules) > 250:
        raise ConfigError(f"{source}: rules: at most 250 rules, found {len(rules)}")
    needs_farmland = [r.name for r in rules if r.where != "anywhere"]
    if needs_farmland and layers.farmland is None:
        raise ConfigError(
            f"{source}: layers.farmland: rule {needs_farmland[0]!r} needs a farmland layer "
            "(where = farmland/outside_farmland); set layers.farmland or change the rule's where"
        )
    top.finish()
    return Config(job=job, inputs=inputs, layers=layers, processing=processing,
                  detection=detection, rules=rules, source=Path(source) if source != "<config>" else None)


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML config file.

    Raises
    ------
    ConfigError
        If the file is missing, is not valid TOML, or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass the path of a .toml file (see configs/)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, base_dir=path.resolve().parent, source=str(path))


def default_rules() -> tuple:
    """The five standard rules with land-survey minimum mapping units (DESIGN.md §1)."""
    C = LandCover
    crop_like = frozenset({C.LOW_VEGETATION, C.BARE})
    return (
        Rule("construction_on_farmland", crop_like, frozenset({C.BUILT}), "farmland", 200.0),
        Rule("construction_elsewhere", frozenset({C.LOW_VEGETATION, C.BARE, C.TREE}), frozenset({C.BUILT}),
             "outside_farmland", 200.0),
        Rule("afforestation", frozenset({C.LOW_VEGETATION, C.BARE, C.BUILT}), frozenset({C.TREE}), "anywhere", 400.0),
        Rule("demolition", frozenset({C.BUILT}), frozenset({C.BARE}), "anywhere", 200.0),
        Rule("reclamation", frozenset({C.BUILT, C.BARE}), frozenset({C.LOW_VEGETATION}), "outside_farmland", 400.0),
    )


__all__ = [
    "Config", "Rule", "LayerRef", "JobSection", "InputsSection", "LayersSection",
    "ProcessingSection", "DetectionSection", "load_config", "parse_config", "default_rules",
    "WHERE_VALUES", "BAND_NAMES",
]
