"""Land-cover classes shared by every stage (classification codes in rasters).

Codes are stored as ``uint8``. ``NODATA`` (0) marks pixels that are not usable.
"""

from __future__ import annotations

from enum import IntEnum


class LandCover(IntEnum):
    """Land-cover class codes of the per-epoch classification rasters."""

    NODATA = 0
    BUILT = 1
    BARE = 2
    LOW_VEGETATION = 3
    TREE = 4
    WATER = 5
    SHADOW = 6

    @property
    def label(self) -> str:
        """Lower-case name as written in configs and outputs (e.g. ``"low_vegetation"``)."""
        return self.name.lower()

    @classmethod
    def from_label(cls, label: str) -> "LandCover":
        """Return the class named ``label`` (case-insensitive, ``crop`` = low vegetation)."""
        key = label.strip().lower()
        if key == "crop":
            key = "low_vegetation"
        try:
            return cls[key.upper()]
        except KeyError:
            names = ", ".join(c.label for c in cls if c is not cls.NODATA)
            raise ValueError(f"unknown land-cover class {label!r}; expected one of: {names}") from None


#: class labels usable in rules, in code order
CLASS_LABELS = tuple(c.label for c in LandCover if c is not LandCover.NODATA)

#: change rules every job knows about (truth polygons of the generator use these names)
RULE_NAMES = (
    "construction_on_farmland",
    "construction_elsewhere",
    "afforestation",
    "demolition",
    "reclamation",
)

#: square metres in one mu (Chinese land unit): 10,000 / 15
M2_PER_MU = 10_000.0 / 15.0
