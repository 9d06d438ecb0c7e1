"""What the simulator draws (``data.simulate``): materials with their reflectance spectra and
C-band backscatter, and each dataset's recipe: its land-cover classes (two materials mixed with
a texture, the landscape contexts they occur in, their priors) and its objects (sizes in
metres, material, the surfaces they stand on).

Reflectance control points are in nm, with the vegetation red edge, water absorbing in the
NIR/SWIR and the 1375 nm cirrus band near zero; backscatter is VV/VH in dB.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from geofm_lib.catalog import SENSORS

# --- materials ------------------------------------------------------------------------------

_WL = np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190], float)


# name: (reflectance at _WL, (VV dB, VH dB), vegetated)
_MATERIALS: dict[str, tuple[tuple[float, ...], tuple[float, float], bool]] = {
    "water": ((.07, .06, .05, .025, .02, .012, .01, .008, .007, .005, .001, .003, .002),
              (-21, -28), False),
    "turbid_water": ((.08, .09, .11, .09, .07, .045, .035, .03, .025, .012, .001, .006, .004),
                     (-18, -26), False),
    "broadleaf": ((.02, .03, .065, .03, .10, .29, .37, .41, .42, .31, .002, .20, .09),
                  (-7.5, -13), True),
    "conifer": ((.015, .02, .04, .018, .06, .17, .22, .24, .25, .19, .002, .13, .06),
                (-7, -12.5), True),
    "grass": ((.03, .04, .085, .05, .11, .28, .34, .37, .38, .28, .002, .25, .13),
              (-11, -18), True),
    "crop": ((.03, .04, .09, .035, .12, .36, .45, .49, .50, .37, .002, .23, .10),
             (-10, -16), True),
    "crop_dry": ((.06, .08, .12, .16, .18, .21, .23, .25, .26, .22, .003, .33, .25),
                 (-12, -20), False),
    "crop_yellow": ((.04, .05, .13, .10, .16, .27, .31, .33, .34, .26, .002, .26, .15),
                    (-10.5, -17), True),
    "weed": ((.02, .03, .06, .025, .08, .30, .40, .44, .45, .33, .002, .19, .08),
             (-9.5, -15), True),
    "bare_soil": ((.07, .09, .13, .18, .21, .23, .25, .27, .28, .25, .004, .36, .30),
                  (-13, -21), False),
    "sand": ((.14, .18, .25, .32, .35, .37, .39, .41, .42, .40, .005, .48, .42),
             (-17, -25), False),
    "rock": ((.10, .12, .15, .18, .19, .20, .21, .22, .22, .21, .004, .26, .22),
             (-10, -18), False),
    "shrub": ((.03, .04, .07, .06, .10, .20, .24, .26, .27, .21, .002, .22, .13),
              (-10, -17), True),
    "wetland": ((.03, .04, .06, .04, .07, .15, .18, .20, .20, .14, .002, .10, .05),
                (-12, -19), True),
    "peat": ((.03, .04, .05, .05, .07, .12, .14, .16, .16, .12, .002, .12, .07),
             (-13, -20), False),
    "urban": ((.09, .10, .12, .13, .14, .15, .16, .17, .17, .15, .003, .19, .17),
              (-2, -10), False),
    "concrete": ((.20, .22, .25, .27, .28, .29, .30, .30, .30, .28, .005, .32, .29),
                 (-6, -15), False),
    "asphalt": ((.05, .05, .06, .06, .07, .07, .07, .08, .08, .08, .002, .09, .09),
                (-14, -22), False),
    "roof_red": ((.05, .06, .08, .22, .25, .27, .28, .29, .29, .27, .004, .30, .25),
                 (0, -9), False),
    "roof_grey": ((.12, .13, .14, .15, .15, .16, .16, .16, .16, .15, .003, .17, .15),
                  (1, -8), False),
    "burnt": ((.03, .03, .04, .05, .06, .07, .08, .09, .09, .09, .002, .15, .14),
              (-13, -21), False),
    "salt": ((.40, .45, .50, .52, .52, .52, .51, .50, .50, .45, .005, .40, .30),
             (-18, -25), False),
    "snow": ((.85, .88, .88, .86, .85, .84, .83, .80, .79, .70, .01, .10, .05),
             (-14, -22), False),
    # object materials
    "metal_white": ((.45, .50, .52, .53, .53, .53, .53, .52, .52, .50, .01, .45, .40),
                    (6, -4), False),
    "metal_dark": ((.04, .04, .05, .05, .05, .05, .06, .06, .06, .06, .002, .06, .06),
                   (5, -5), False),
    "paint_red": ((.05, .05, .06, .40, .45, .47, .48, .48, .48, .46, .005, .40, .35),
                  (5, -5), False),
    "paint_blue": ((.18, .22, .12, .06, .06, .08, .10, .12, .12, .12, .003, .10, .08),
                   (5, -5), False),
    "paint_orange": ((.05, .06, .20, .60, .65, .66, .66, .65, .65, .62, .006, .55, .45),
                     (-8, -16), False),
    "skin_dark": ((.03, .04, .06, .10, .14, .18, .22, .26, .27, .25, .003, .20, .10),
                  (-10, -18), False),
}


MATERIALS = tuple(_MATERIALS)


_MAT_INDEX = {m: i for i, m in enumerate(MATERIALS)}


_REFL = np.array([v[0] for v in _MATERIALS.values()], float)  # (M, 13)


_SAR_DB = np.array([v[1] for v in _MATERIALS.values()], float)  # (M, 2)


_VEGETATED = np.array([v[2] for v in _MATERIALS.values()])


# absorption features a multispectral band samples too coarsely to see (centre nm, width nm,
# depth as a fraction of the reflectance there): leaf water and chlorophyll of vegetation, the
# Al-OH feature of clay in soils and rock (hyperspectral sensors resolve them)
_FEATURES = {
    True: ((970.0, 25.0, 0.10), (1200.0, 45.0, 0.18), (2100.0, 120.0, 0.25)),  # vegetated
    "mineral": ((2200.0, 30.0, 0.15), (1900.0, 60.0, 0.10)),
}
_MINERAL = ("bare_soil", "sand", "rock", "crop_dry")


def _fine_spectra(wl: np.ndarray) -> np.ndarray:
    """(materials, len(wl)) surface reflectance on a fine grid: the control points without the
    1375 nm point (near 0 there is the atmosphere's cirrus absorption as Sentinel-2's B10 sees
    it at the top of the atmosphere, not the surface's), held flat past 2190 nm, with each
    material's narrow absorption features."""
    keep = _WL != 1375
    out = np.stack([np.interp(wl, _WL[keep], r[keep]) for r in _REFL])
    for i, name in enumerate(MATERIALS):
        feats = _FEATURES.get("mineral") if name in _MINERAL else (
            _FEATURES[True] if _VEGETATED[i] else ())
        for centre, width, depth in feats:
            out[i] *= 1 - depth * np.exp(-0.5 * ((wl - centre) / width) ** 2)
    return out


@cache
def _signature_table(sensor_key: str) -> np.ndarray:
    """Per-material signature for a sensor: reflectance at band centres (multispectral), each
    band's Gaussian spectral response over the fine spectra (hyperspectral: centre and FWHM of
    every band), or linear sigma0 (SAR)."""
    sensor = SENSORS[sensor_key]
    if sensor.kind == "sar":
        return 10.0 ** (_SAR_DB / 10.0)
    if sensor.kind == "panchromatic":
        wl = np.linspace(450, 800, 8)
        return np.stack([np.interp(wl, _WL, r).mean(keepdims=True) for r in _REFL])
    centers = np.array([b.center_nm for b in sensor.bands], float)
    if sensor.kind == "hyperspectral":
        wl = np.arange(380.0, 2500.0, 1.0)
        fwhm = np.array([b.fwhm_nm for b in sensor.bands], float)
        srf = np.exp(-0.5 * ((wl[None] - centers[:, None]) / (fwhm[:, None] / 2.3548)) ** 2)
        srf /= srf.sum(axis=1, keepdims=True)
        return _fine_spectra(wl) @ srf.T
    return np.stack([np.interp(centers, _WL, r) for r in _REFL])


# --- scene recipes ----------------------------------------------------------------------------

@dataclass(frozen=True)
class AreaClass:
    """A land-cover class: two materials mixed with a texture, in parcels of ``parcel_m``."""

    materials: tuple[str, str]
    mix: float  # mean fraction of the second material
    texture: float  # amplitude of the fine texture on the mix
    contexts: tuple[str, ...]
    prior: float = 1.0
    label: bool = True


@dataclass(frozen=True)
class ObjectClass:
    """A discrete object class with its physical size and where it may stand."""

    length_m: float
    width_m: float
    material: str
    on: tuple[str, ...]  # area classes it may be placed on
    contexts: tuple[str, ...]
    prior: float = 1.0
    max_count: int = 3
    label: bool = True


@dataclass(frozen=True)
class Recipe:
    """How scenes of one dataset are composed."""

    areas: dict[str, AreaClass]
    objects: dict[str, ObjectClass]
    contexts: dict[str, float]  # context -> prior weight
    parcel_m: float  # correlation length of land-cover parcels
    texture_m: float  # correlation length of within-class texture
    classes_per_scene: float  # mean number of area classes beyond the first
    object_classes_per_scene: float = 0.0
    min_area_fraction: float = 0.01


def _A(m1, m2="", mix=0.0, tex=0.1, ctx=(), prior=1.0, label=True):
    return AreaClass((m1, m2 or m1), mix, tex, tuple(ctx), prior, label)


def _O(length, width, material, on, ctx, prior=1.0, max_count=3, label=True):
    return ObjectClass(length, width, material, tuple(on), tuple(ctx), prior, max_count, label)


_U, _AG, _F, _N, _W, _C = "urban", "agriculture", "forest", "natural", "wetland", "coast"

# BigEarthNet: CORINE classes with rough frequencies of the archive as priors.
_BIGEARTHNET_AREAS = {
    "Continuous urban fabric": _A("urban", "roof_red", .3, .25, [_U], .5),
    "Discontinuous urban fabric": _A("urban", "grass", .45, .3, [_U, _AG], 3),
    "Industrial or commercial units": _A("concrete", "roof_grey", .5, .3, [_U], 1),
    "Road and rail networks and associated land": _A("asphalt", "grass", .4, .3, [_U], .3),
    "Port areas": _A("concrete", "water", .3, .3, [_U, _C], .1),
    "Airports": _A("concrete", "grass", .5, .3, [_U], .1),
    "Mineral extraction sites": _A("rock", "bare_soil", .4, .25, [_N, _U], .3),
    "Dump sites": _A("bare_soil", "urban", .4, .3, [_U], .1),
    "Construction sites": _A("bare_soil", "concrete", .3, .3, [_U], .1),
    "Green urban areas": _A("grass", "broadleaf", .4, .25, [_U], .3),
    "Sport and leisure facilities": _A("grass", "concrete", .25, .3, [_U], .4),
    "Non-irrigated arable land": _A("crop", "bare_soil", .35, .3, [_AG], 4),
    "Permanently irrigated land": _A("crop", "water", .12, .2, [_AG], .4),
    "Rice fields": _A("water", "crop", .55, .2, [_AG, _W], .1),
    "Vineyards": _A("shrub", "bare_soil", .5, .35, [_AG], .4),
    "Fruit trees and berry plantations": _A("broadleaf", "grass", .45, .35, [_AG], .3),
    "Olive groves": _A("shrub", "bare_soil", .35, .3, [_AG], .3),
    "Pastures": _A("grass", "crop", .15, .15, [_AG], 4),
    "Annual crops associated with permanent crops": _A("crop", "shrub", .4, .3, [_AG], .2),
    "Complex cultivation patterns": _A("crop", "grass", .5, .45, [_AG], 2.5),
    "Land principally occupied by agriculture, with significant areas of natural vegetation":
        _A("grass", "broadleaf", .4, .4, [_AG, _F], 2.5),
    "Agro-forestry areas": _A("broadleaf", "grass", .5, .3, [_AG, _F], .6),
    "Broad-leaved forest": _A("broadleaf", "broadleaf", 0, .1, [_F], 3),
    "Coniferous forest": _A("conifer", "conifer", 0, .1, [_F], 4),
    "Mixed forest": _A("conifer", "broadleaf", .5, .3, [_F], 4),
    "Natural grassland": _A("grass", "bare_soil", .2, .2, [_N], .6),
    "Moors and heathland": _A("shrub", "peat", .3, .25, [_N, _W], .3),
    "Sclerophyllous vegetation": _A("shrub", "rock", .35, .25, [_N], .5),
    "Transitional woodland/shrub": _A("shrub", "broadleaf", .4, .3, [_F, _N], 3.5),
    "Beaches, dunes, sands": _A("sand", "sand", 0, .1, [_C], .2),
    "Bare rock": _A("rock", "rock", 0, .15, [_N], .1),
    "Sparsely vegetated areas": _A("rock", "grass", .3, .3, [_N], .2),
    "Burnt areas": _A("burnt", "shrub", .2, .3, [_N, _F], .1),
    "Inland marshes": _A("wetland", "water", .25, .3, [_W], .2),
    "Peatbogs": _A("peat", "wetland", .3, .2, [_W, _F], .6),
    "Salt marshes": _A("wetland", "salt", .2, .3, [_C, _W], .05),
    "Salines": _A("salt", "water", .3, .3, [_C], .03),
    "Intertidal flats": _A("turbid_water", "sand", .4, .3, [_C], .05),
    "Water courses": _A("water", "turbid_water", .3, .2, [_W, _AG], .3),
    "Water bodies": _A("water", "water", 0, .05, [_W, _F], 2),
    "Coastal lagoons": _A("water", "turbid_water", .3, .2, [_C], .05),
    "Estuaries": _A("turbid_water", "water", .3, .2, [_C], .05),
    "Sea and ocean": _A("water", "water", 0, .02, [_C], 2),
}


_BIGEARTHNET = Recipe(
    areas=_BIGEARTHNET_AREAS, objects={},
    contexts={_U: 1.0, _AG: 3.0, _F: 3.0, _N: 1.0, _W: 1.0, _C: 0.6},
    parcel_m=450.0, texture_m=40.0, classes_per_scene=1.8)


# Agriculture-Vision: a crop field with anomaly patches (all labels are areas).
_AGRI = Recipe(
    areas={
        "field": _A("crop", "bare_soil", .2, .35, ["field"], 6, label=False),
        "Double plant": _A("weed", "crop", .3, .2, ["field"], .8),
        "Drydown": _A("crop_dry", "crop", .3, .3, ["field"], .8),
        "Endrow": _A("bare_soil", "crop", .5, .3, ["field"], .6),
        "Nutrient deficiency": _A("crop_yellow", "crop", .3, .2, ["field"], 1),
        "Planter skip": _A("bare_soil", "bare_soil", 0, .15, ["field"], .5),
        "Storm damage": _A("crop_dry", "grass", .4, .4, ["field"], .2),
        "Water": _A("turbid_water", "water", .4, .2, ["field"], .6),
        "Waterway": _A("grass", "turbid_water", .2, .2, ["field"], .5),
        "Weed cluster": _A("weed", "grass", .3, .4, ["field"], 1.2),
    },
    objects={}, contexts={"field": 1.0}, parcel_m=2.0, texture_m=0.25,
    classes_per_scene=1.2, min_area_fraction=0.02)


# SeaDronesSee: open water with small objects.
_SEA = Recipe(
    areas={"open water": _A("water", "turbid_water", .3, .3, ["sea"], 1, label=False)},
    objects={
        "Swimmer": _O(0.7, 0.5, "skin_dark", ["open water"], ["sea"], 2, 4),
        "Boat": _O(5.0, 2.0, "metal_white", ["open water"], ["sea"], 1.5, 2),
        "Jetski": _O(3.0, 1.2, "paint_blue", ["open water"], ["sea"], .7, 2),
        "Life-saving appliance": _O(0.8, 0.8, "paint_orange", ["open water"], ["sea"], 1, 3),
        "Buoy": _O(0.5, 0.5, "paint_red", ["open water"], ["sea"], 1, 3),
    },
    contexts={"sea": 1.0}, parcel_m=30.0, texture_m=0.4, classes_per_scene=0,
    object_classes_per_scene=1.6)


# Context surfaces shared by the very-high-resolution object datasets (not labels).
_VHR_AREAS = {  # paved ground is fairly uniform at 30 cm; objects stand out against it
    "paved": _A("asphalt", "concrete", .2, .08, ["urban", "airport", "port", "rail"], 3,
                label=False),
    "lawn": _A("grass", "bare_soil", .15, .12, ["urban", "rural", "airport"], 2, label=False),
    "trees": _A("broadleaf", "grass", .3, .25, ["rural", "urban"], 1, label=False),
    "bare ground": _A("bare_soil", "rock", .3, .12, ["construction", "rural", "rail"], 1.5,
                      label=False),
    "harbour water": _A("water", "turbid_water", .3, .1, ["port"], 3, label=False),
}


_LAND = ("paved", "lawn", "bare ground")


_ROAD = ("paved",)


_WATER = ("harbour water",)


def _xview_objects() -> dict[str, ObjectClass]:
    v = ("urban", "construction", "port")
    sizes = {  # name: (length m, width m, material, placement, contexts, prior, max count)
        "Fixed-wing Aircraft": (30, 28, "metal_white", _ROAD, ("airport",), 1, 2),
        "Small Aircraft": (10, 11, "metal_white", _ROAD + ("lawn",), ("airport",), 1, 3),
        "Cargo Plane": (50, 48, "metal_white", _ROAD, ("airport",), .5, 1),
        "Helicopter": (12, 12, "metal_dark", _ROAD, ("airport",), .4, 2),
        "Passenger Vehicle": (4.6, 1.8, "metal_white", _ROAD, v, 4, 6),
        "Small Car": (4.2, 1.7, "paint_red", _ROAD, v, 4, 6),
        "Bus": (12, 2.5, "paint_orange", _ROAD, ("urban",), 1, 2),
        "Pickup Truck": (5.5, 2.0, "metal_dark", _ROAD, v, 2, 3),
        "Utility Truck": (7, 2.4, "metal_white", _ROAD, v, 1, 2),
        "Truck": (8, 2.5, "paint_blue", _ROAD, v, 1.5, 3),
        "Cargo Truck": (9, 2.5, "metal_white", _ROAD, v, 1, 2),
        "Truck w/Box": (8, 2.5, "metal_white", _ROAD, v, 1, 2),
        "Truck Tractor": (6, 2.5, "paint_red", _ROAD, v, .7, 2),
        "Trailer": (13, 2.5, "metal_white", _ROAD, v, .8, 2),
        "Truck w/Flatbed": (9, 2.5, "metal_dark", _ROAD, v, .6, 2),
        "Truck w/Liquid": (12, 2.5, "metal_white", _ROAD, v, .4, 2),
        "Crane Truck": (12, 2.8, "paint_orange", _ROAD, ("construction", "port"), .3, 1),
        "Railway Vehicle": (20, 3, "metal_dark", ("bare ground",), ("rail",), .6, 3),
        "Passenger Car": (25, 3, "metal_white", ("bare ground",), ("rail",), .6, 3),
        "Cargo Car": (15, 3, "paint_red", ("bare ground",), ("rail",), 1, 4),
        "Flat Car": (15, 3, "metal_dark", ("bare ground",), ("rail",), .5, 3),
        "Tank car": (16, 3, "metal_dark", ("bare ground",), ("rail",), .5, 3),
        "Locomotive": (20, 3, "paint_orange", ("bare ground",), ("rail",), .4, 1),
        "Maritime Vessel": (40, 10, "metal_white", _WATER, ("port",), 1, 2),
        "Motorboat": (7, 2.5, "metal_white", _WATER, ("port",), 1.5, 4),
        "Sailboat": (10, 3, "metal_white", _WATER, ("port",), 1, 3),
        "Tugboat": (25, 9, "paint_red", _WATER, ("port",), .4, 1),
        "Barge": (60, 12, "metal_dark", _WATER, ("port",), .4, 1),
        "Fishing Vessel": (20, 6, "paint_blue", _WATER, ("port",), .6, 2),
        "Ferry": (60, 15, "metal_white", _WATER, ("port",), .2, 1),
        "Yacht": (20, 5, "metal_white", _WATER, ("port",), .5, 2),
        "Container Ship": (250, 35, "paint_red", _WATER, ("port",), .15, 1),
        "Oil Tanker": (250, 45, "metal_dark", _WATER, ("port",), .1, 1),
        "Engineering Vehicle": (8, 3, "paint_orange", _LAND, ("construction",), 1, 2),
        "Tower crane": (50, 3, "paint_orange", _LAND, ("construction",), .5, 1),
        "Container Crane": (50, 30, "paint_blue", _ROAD, ("port",), .3, 1),
        "Reach Stacker": (11, 4, "paint_orange", _ROAD, ("port",), .3, 1),
        "Straddle Carrier": (10, 6, "metal_white", _ROAD, ("port",), .3, 1),
        "Mobile Crane": (12, 3, "paint_orange", _LAND, ("construction",), .4, 1),
        "Dump Truck": (8, 2.5, "paint_orange", _LAND, ("construction",), .7, 2),
        "Haul Truck": (12, 7, "paint_orange", _LAND, ("construction",), .3, 1),
        "Scraper/Tractor": (10, 3.5, "paint_orange", _LAND, ("construction", "rural"), .4, 1),
        "Front loader/Bulldozer": (7, 3, "paint_orange", _LAND, ("construction",), .6, 2),
        "Excavator": (9, 3, "paint_orange", _LAND, ("construction",), .7, 2),
        "Cement Mixer": (9, 2.5, "metal_white", _LAND, ("construction",), .4, 1),
        "Ground Grader": (9, 2.5, "paint_orange", _LAND, ("construction",), .3, 1),
        "Hut/Tent": (4, 4, "metal_white", ("lawn", "bare ground"), ("rural",), 1.5, 4),
        "Shed": (6, 5, "roof_grey", ("lawn", "bare ground"), ("rural", "urban"), 2, 3),
        "Building": (20, 15, "roof_red", _LAND, ("urban", "rural"), 5, 4),
        "Aircraft Hangar": (60, 50, "roof_grey", _ROAD, ("airport",), .4, 1),
        "Damaged Building": (15, 12, "rock", _LAND, ("urban", "rural"), .7, 2),
        "Facility": (80, 60, "roof_grey", _ROAD, ("urban", "port"), .5, 1),
        "Construction Site": (60, 50, "bare_soil", ("lawn", "bare ground"), ("construction",),
                              1, 1),
        "Vehicle Lot": (50, 30, "asphalt", ("lawn", "bare ground"), ("urban",), .8, 1),
        "Helipad": (20, 20, "concrete", ("lawn",), ("airport",), .3, 1),
        "Storage Tank": (25, 25, "metal_white", _LAND, ("port", "urban"), .8, 3),
        "Shipping container lot": (60, 40, "paint_blue", _ROAD, ("port",), .6, 1),
        "Shipping Container": (12, 2.4, "paint_red", _ROAD, ("port",), 1.5, 5),
        "Pylon": (8, 8, "metal_dark", ("lawn", "bare ground"), ("rural",), .6, 2),
        "Tower": (6, 6, "metal_dark", _LAND, ("rural", "urban"), .4, 1),
    }
    return {k: _O(*v_) for k, v_ in sizes.items()}


_XVIEW = Recipe(
    areas=_VHR_AREAS, objects=_xview_objects(),
    contexts={"urban": 3, "rural": 2, "port": 1, "airport": .6, "construction": 1, "rail": .5},
    parcel_m=25.0, texture_m=2.5, classes_per_scene=1.0, object_classes_per_scene=2.2)


_MAFAT = Recipe(
    areas=_VHR_AREAS, objects={
        "Small Vehicle": _O(4.5, 1.8, "metal_white", _ROAD, ("urban", "port"), 5, 6),
        "Bus": _O(12, 2.5, "paint_orange", _ROAD, ("urban",), 1, 2),
        "Medium Vehicle": _O(7, 2.3, "metal_dark", _ROAD, ("urban", "port"), 2, 3),
        "Large Vehicle": _O(10, 2.5, "metal_white", _ROAD, ("urban", "port"), 1.5, 2),
        "Double Trailer Truck": _O(22, 2.5, "metal_white", _ROAD, ("port", "urban"), .6, 1),
        "Container": _O(12, 2.4, "paint_red", _ROAD, ("port",), 1.5, 5),
        "Heavy Equipment": _O(8, 3, "paint_orange", _LAND, ("construction",), 1, 2),
        "Pylon": _O(8, 8, "metal_dark", ("lawn", "bare ground"), ("rural",), .6, 2),
        "Small Aircraft": _O(10, 11, "metal_white", _ROAD, ("airport",), .8, 2),
        "Large Aircraft": _O(40, 38, "metal_white", _ROAD, ("airport",), .5, 1),
        "Small Vessel": _O(8, 3, "metal_white", _WATER, ("port",), 1.5, 3),
        "Medium Vessel": _O(20, 6, "paint_blue", _WATER, ("port",), .8, 2),
        "Large Vessel": _O(60, 12, "metal_dark", _WATER, ("port",), .4, 1),
    },
    contexts={"urban": 3, "rural": 1, "port": 1.5, "airport": .6, "construction": 1},
    parcel_m=25.0, texture_m=2.5, classes_per_scene=1.0, object_classes_per_scene=1.8)


_HARVEY = Recipe(
    areas={
        "Water": _A("turbid_water", "water", .3, .2, ["flooded"], 3),
        "lawn": _A("grass", "bare_soil", .2, .3, ["dry", "flooded"], 2, label=False),
        "trees": _A("broadleaf", "grass", .3, .3, ["dry", "flooded"], 1, label=False),
    },
    objects={
        "Flooded building": _O(15, 12, "roof_grey", ("Water",), ("flooded",), 2, 3),
        "Non-flooded building": _O(15, 12, "roof_red", ("lawn", "trees"), ("dry", "flooded"),
                                   2, 3),
        "Flooded road": _O(80, 7, "turbid_water", ("Water",), ("flooded",), 1.5, 1),
        "Non-flooded road": _O(80, 7, "asphalt", ("lawn", "trees"), ("dry", "flooded"), 1.5, 1),
    },
    contexts={"flooded": 2, "dry": 1}, parcel_m=15.0, texture_m=0.6, classes_per_scene=1.2,
    object_classes_per_scene=1.5)


_QFABRIC_AREAS = {
    # change types (what is being built) and statuses (how far) are land-surface states here
    "Residential": _A("roof_red", "grass", .4, .4, ["urban", "periurban"], 2),
    "Commercial": _A("roof_grey", "asphalt", .4, .3, ["urban"], 1.2),
    "Industrial": _A("concrete", "roof_grey", .4, .3, ["industrial"], 1),
    "Road": _A("asphalt", "bare_soil", .15, .2, ["urban", "periurban", "industrial"], 1.5),
    "Demolition": _A("rock", "bare_soil", .5, .4, ["urban"], .4),
    "Mega Projects": _A("concrete", "bare_soil", .5, .4, ["industrial"], .3),
    "Prior Construction": _A("grass", "bare_soil", .4, .3, ["periurban"], .8),
    "Greenland": _A("grass", "crop", .3, .3, ["periurban", "rural"], 1),
    "Land Cleared": _A("bare_soil", "grass", .15, .3, ["periurban"], .8),
    "Excavation": _A("bare_soil", "rock", .5, .35, ["periurban", "industrial"], .8),
    "Materials Dumped": _A("rock", "sand", .5, .4, ["periurban", "industrial"], .5),
    "Construction Started": _A("bare_soil", "concrete", .3, .35, ["periurban"], .8),
    "Construction Midway": _A("concrete", "bare_soil", .4, .35, ["periurban", "urban"], .8),
    "Construction Done": _A("roof_grey", "concrete", .4, .3, ["urban", "periurban"], .8),
    "Operational": _A("roof_red", "asphalt", .3, .3, ["urban"], .8),
    "Dense Urban": _A("roof_red", "roof_grey", .5, .4, ["urban"], 1.5),
    "Sparse Urban": _A("roof_red", "grass", .6, .4, ["periurban"], 1.2),
    "Rural": _A("grass", "roof_red", .15, .3, ["rural"], 1),
    "Industrial Area": _A("roof_grey", "concrete", .5, .3, ["industrial"], 1),
    "Farms": _A("crop", "bare_soil", .3, .3, ["rural"], 1.2),
    "Barren Land": _A("bare_soil", "sand", .3, .3, ["periurban", "rural"], 1.2),
    "Sparse Forest": _A("broadleaf", "grass", .5, .4, ["rural", "periurban"], 1),
    "Dense Forest": _A("broadleaf", "conifer", .3, .2, ["rural"], .6),
    "Lake": _A("water", "turbid_water", .3, .2, ["rural", "periurban"], .5),
    "River": _A("turbid_water", "water", .3, .2, ["rural", "urban"], .4),
    "Coastal Region": _A("sand", "water", .4, .4, ["coast"], 1),
    "Desert": _A("sand", "rock", .2, .2, ["desert"], 1),
    "Hills": _A("rock", "shrub", .4, .3, ["rural", "desert"], .5),
    "Snow": _A("snow", "rock", .2, .3, ["rural"], .1),
    "Grassland": _A("grass", "grass", 0, .2, ["rural", "periurban"], .8),
    "Wetland": _A("wetland", "water", .3, .3, ["coast", "rural"], .3),
    "Mangroves": _A("broadleaf", "turbid_water", .4, .3, ["coast"], .2),
    "Beach": _A("sand", "sand", 0, .1, ["coast"], .5),
}


_QFABRIC = Recipe(
    areas=_QFABRIC_AREAS, objects={},
    contexts={"urban": 2, "periurban": 2.5, "industrial": 1, "rural": 1.5, "coast": .5,
              "desert": .4},
    parcel_m=12.0, texture_m=0.8, classes_per_scene=2.5)


RECIPES: dict[str, Recipe] = {
    "bigearthnet_s2": _BIGEARTHNET, "bigearthnet_s1": _BIGEARTHNET,
    "enmap_corine": _BIGEARTHNET,  # CORINE land cover seen by EnMAP, as seed 001's EnMAP-CORINE
    "agriculture_vision": _AGRI, "seadronessee": _SEA, "xview": _XVIEW, "qfabric": _QFABRIC,
    "houston_harvey": _HARVEY, "mafat": _MAFAT,
}


# Datasets that image the same scenes share a scene family (and so a scene seed).
_SCENE_FAMILY = {"bigearthnet_s2": "bigearthnet", "bigearthnet_s1": "bigearthnet",
                 "enmap_corine": "enmap_corine"}
