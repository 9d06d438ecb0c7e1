"""Bands as data: every band a record with a canonical name, centre wavelength and width (or a
polarisation for SAR), units and nodata value.

Readers find bands under many names (``B1`` / ``B01``, ``B8a`` / ``B8A``, ``band17``, ``vv``,
``red``); :func:`resolve_bands` turns them into :class:`BandRecord` s with canonical names, so
that everything downstream (the RGB mapping of the image towers, the display, the band
adapters, the SSL pairing, the statistics) works from the records and never from band order.

Canonical names:

* Sentinel-2: ``B01`` ... ``B12``, ``B8A`` (``B1``, ``b8a``, ``S2_B04`` resolve to them when the
  sensor is Sentinel-2; the two-digit forms are recognised without a sensor too).
* SAR polarisations: ``VV``, ``VH``, ``HH``, ``HV`` (any case).
* Colour cameras: ``R``, ``G``, ``B`` (``red``, ``green``, ``blue`` in any case), ``PAN``; other
  common names (``nir``, ``swir1``, ``rededge``, ...) lower-case with a nominal wavelength.
* Any other band with a known centre wavelength (hyperspectral bands; ``band17`` of EnMAP; a
  band declared with its wavelength) is named by it: ``463nm`` (``463.5nm`` where two bands
  would round to the same nanometre). The name alone then gives the wavelength.
* A band with neither a known name nor a wavelength keeps its name and has no wavelength: it
  can be trained through ``first_layer`` / ``conv1x1``, never mistaken for a colour.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from geofm_lib.catalog import ENMAP_BANDS, SENSORS, Sensor
from geofm_lib.errors import DataError

# C-band SAR (Sentinel-1, 5.405 GHz): 5.55 cm, as a "centre wavelength" for the adapters
C_BAND_NM = 5.55e7

POLARISATIONS = {"VV": 1, "VH": 2, "HH": 3, "HV": 4}

# common band names of camera products and user files -> (canonical name, nominal centre nm)
GENERIC_BANDS: dict[str, tuple[str, float]] = {
    "red": ("R", 665.0), "r": ("R", 665.0), "green": ("G", 560.0), "g": ("G", 560.0),
    "blue": ("B", 490.0), "b": ("B", 490.0), "pan": ("PAN", 625.0),
    "panchromatic": ("PAN", 625.0), "nir": ("nir", 842.0), "rededge": ("rededge", 705.0),
    "swir1": ("swir1", 1610.0), "swir2": ("swir2", 2190.0), "coastal": ("coastal", 443.0),
}

# the colour of each model channel of an RGB tower: target centre and accepted window, nm
COLOUR_WINDOWS_NM = {"red": (665.0, 620.0, 700.0), "green": (560.0, 520.0, 600.0),
                     "blue": (490.0, 440.0, 520.0)}

_WAVELENGTH_NAME = re.compile(r"^(\d+(?:\.\d+)?)nm$")
_S2_NAME = re.compile(r"^(?:S2[_-]?)?B0*(\d{1,2})(A?)$", re.IGNORECASE)
_INDEX_NAME = re.compile(r"^(?:band|b)[ _-]?0*(\d+)$", re.IGNORECASE)


def _enmap_table() -> list[tuple[float, float]]:
    """EnMAP's 224 band centres and nominal widths (nm), from the catalog (whose centres are
    torchgeo's ``EnMAP.wavelengths``: defaults that vary a little from tile to tile; a tile's
    own metadata wins where the reader has it)."""
    return [(b.center_nm, b.fwhm_nm) for b in ENMAP_BANDS]


# hyperspectral sensors whose bands are known by index (``band17``, ``B17``): centre, width
SPECTRAL_TABLES = {"enmap": _enmap_table}


def spectral_sensors() -> tuple[str, ...]:
    """Sensor keys a reader may name for band lookup: the catalog's and the spectral tables'."""
    return (*SENSORS, *SPECTRAL_TABLES)


@dataclass(frozen=True)
class BandRecord:
    """One band of a product as it enters the shards."""

    name: str  # canonical name (module docstring)
    source_name: str  # the name the reader found
    center_nm: float | None = None  # None: unknown (or SAR, see polarisation)
    fwhm_nm: float | None = None
    polarisation: str | None = None  # SAR: VV, VH, HH, HV
    units: str | None = None
    nodata: float | None = None  # the value that marks "no measurement" in this band

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BandRecord:
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})


def wavelength_nm(name: str) -> float | None:
    """Centre wavelength (nm) of a band by canonical name, or None when the name gives none."""
    if name in POLARISATIONS:
        return C_BAND_NM
    match = _WAVELENGTH_NAME.match(name)
    if match:
        return float(match.group(1))
    for sensor in SENSORS.values():
        for band in sensor.bands:
            if band.name == name and band.center_nm is not None:
                return float(band.center_nm)
    generic = GENERIC_BANDS.get(name.lower())
    return generic[1] if generic else None


def _s2_canonical(name: str) -> str | None:
    match = _S2_NAME.match(name.strip())
    if not match:
        return None
    number, narrow = int(match.group(1)), match.group(2).upper()
    return f"B{number}A" if narrow else f"B{number:02d}"  # B8A: Sentinel-2's narrow NIR


def _from_sensor(name: str, sensor: str):
    """(canonical name, centre, width, polarisation) of ``name`` in a sensor's band table."""
    if sensor in SPECTRAL_TABLES:
        table = SPECTRAL_TABLES[sensor]()
        match = _INDEX_NAME.match(name.strip())
        if not match or not 1 <= int(match.group(1)) <= len(table):
            return None
        center, width = table[int(match.group(1)) - 1]
        return None, center, width, None
    catalog = isinstance(sensor, str)
    bands = {b.name: b for b in (SENSORS[sensor] if catalog else sensor).bands}
    for candidate in (name, name.upper(), _s2_canonical(name)):
        if candidate in bands:
            b = bands[candidate]
            pol = b.name.upper() if b.name.upper() in POLARISATIONS else None
            if catalog:  # the catalog's names are canonical
                return b.name, b.center_nm, b.fwhm_nm, pol
            # a dataset card's band: canonical by the usual rules (R, B04, VV, or 842nm)
            known = _known(b.name)
            return (known[0] if known else None), b.center_nm, b.fwhm_nm, pol
    return None


def _known(name: str):
    """(canonical name, centre, width, polarisation) of a name that needs no sensor."""
    if name.upper() in POLARISATIONS:
        return name.upper(), None, None, name.upper()
    s2 = _s2_canonical(name)
    if s2 is not None and name.strip().upper() == s2:  # B04, B8A: Sentinel-2's own spelling
        band = next((b for b in SENSORS["sentinel2_l1c"].bands if b.name == s2), None)
        if band is not None:
            return band.name, band.center_nm, band.fwhm_nm, None
    generic = GENERIC_BANDS.get(re.sub(r"[\s_-]", "", name.lower()))
    if generic is not None:
        return generic[0], generic[1], None, None
    return None


def resolve_bands(names, *, sensor: str | None = None, wavelengths_nm=None, fwhm_nm=None,
                  units: str | None = None, nodata=None, where: str = "") -> list[BandRecord]:
    """Band records, with canonical names, for the bands a reader found.

    Args:
        names: the band names as the source gives them, in channel order.
        sensor: a catalog sensor key (``sentinel2_l1c``, ...), a spectral table (``enmap``) or
            a ``catalog.Sensor`` (a dataset card's) to look the names up in; None for names
            that need no sensor.
        wavelengths_nm / fwhm_nm: per-band centres / widths from the file's metadata or the
            user's declaration (None entries: unknown); they win over the sensor's table.
        units: what the stored values are (e.g. ``reflectance x 10000``).
        nodata: one value for every band, or one per band (None: no nodata value).
        where: the dataset or file, for error messages.

    Raises:
        DataError: unknown sensor, list lengths that differ, or two bands that resolve to the
            same canonical name.
    """
    names = [str(n) for n in names]
    n = len(names)
    if isinstance(sensor, Sensor):  # a dataset card's own sensor
        units = units or (sensor.scaling if sensor.scaling != "as stored" else None)
    elif sensor is not None and sensor not in SENSORS and sensor not in SPECTRAL_TABLES:
        raise DataError(f"{where}: unknown sensor {sensor!r} for band lookup; choose one of "
                        f"{', '.join(spectral_sensors())}, or give band_wavelengths_nm")
    if units is None and isinstance(sensor, str) and sensor in SENSORS:
        units = SENSORS[sensor].scaling
    per_band = {}
    for key, values in (("wavelengths_nm", wavelengths_nm), ("fwhm_nm", fwhm_nm),
                        ("nodata", nodata if isinstance(nodata, list | tuple) else None)):
        if values is not None and len(values) != n:
            raise DataError(f"{where}: {key} has {len(values)} values for {n} bands "
                            f"({', '.join(names[:6])}{' ...' if n > 6 else ''})")
        per_band[key] = list(values) if values is not None else [None] * n
    if not isinstance(nodata, list | tuple):
        per_band["nodata"] = [nodata] * n
    records = []
    for i, name in enumerate(names):
        found = (_from_sensor(name, sensor) if sensor else None) or _known(name)
        canonical, center, width, pol = found or (None, None, None, None)
        if per_band["wavelengths_nm"][i] is not None:
            center = float(per_band["wavelengths_nm"][i])
        if per_band["fwhm_nm"][i] is not None:
            width = float(per_band["fwhm_nm"][i])
        if canonical is None:
            canonical = f"{center:.0f}nm" if center is not None else name
        value = per_band["nodata"][i]
        records.append(BandRecord(canonical, name, None if center is None else float(center),
                                  None if width is None else float(width), pol, units,
                                  None if value is None else float(value)))
    return _unique(records, where)


def _unique(records: list[BandRecord], where: str) -> list[BandRecord]:
    """Wavelength names that collide get one decimal; other collisions are an error."""
    seen: dict[str, int] = {}
    out = list(records)
    for i, r in enumerate(out):
        if r.name in seen and _WAVELENGTH_NAME.match(r.name) and r.center_nm is not None:
            j = seen[r.name]
            out[j] = _renamed(out[j], f"{out[j].center_nm:.1f}nm")
            out[i] = _renamed(r, f"{r.center_nm:.1f}nm")
            seen[out[j].name] = j
            r = out[i]
        if r.name in seen:
            first = out[seen[r.name]]
            raise DataError(f"{where}: bands {first.source_name!r} and {r.source_name!r} both "
                            f"resolve to {r.name!r}; give each band its own name "
                            f"(options.band_names) or wavelength")
        seen[r.name] = i
    return out


def _renamed(record: BandRecord, name: str) -> BandRecord:
    return BandRecord(**{**record.to_dict(), "name": name})


def colour_bands(bands: list[str], unusable=()) -> list[int] | None:
    """Indices of the red, green and blue bands of a product, by canonical name (Sentinel-2
    B04/B03/B02, camera R/G/B) or else by centre wavelength (the band nearest each colour's
    centre inside its window); ``unusable`` bands (e.g. entirely nodata) are passed over.
    None when one colour has no band."""
    usable = [i for i, b in enumerate(bands) if b not in set(unusable)]
    for names in (("B04", "B03", "B02"), ("R", "G", "B")):
        if all(n in bands and bands.index(n) in usable for n in names):
            return [bands.index(n) for n in names]
    picked = []
    for target, lo, hi in COLOUR_WINDOWS_NM.values():
        inside = [(abs(w - target), i) for i in usable
                  if (w := wavelength_nm(bands[i])) is not None and lo <= w <= hi]
        if not inside:
            return None
        picked.append(min(inside)[1])
    return picked


def describe(bands: list[str], limit: int = 8) -> str:
    """A short list of band names for messages (``B01, B02, ... (224 bands)``)."""
    shown = ", ".join(bands[:limit]) + (", ..." if len(bands) > limit else "")
    return f"{shown} ({len(bands)} band{'s' if len(bands) != 1 else ''})"
