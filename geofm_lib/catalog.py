"""The dataset catalog: the eight datasets of seed 000 (Table 1), their sensors and labels.

One place for the facts every stage needs: which group a dataset belongs to, what sensor took
it, at what ground sample distance (GSD), with which bands (centre wavelengths in nm) and which
label vocabulary. The paper's own result tables (Tables 2-4, R@1/R@5/R@10 in %) are stored too,
so evaluation notebooks can put our numbers beside the published ones.

Where a label list could not be confirmed offline it is marked in ``Dataset.labels_status``;
nothing here is silently invented. ``paper_*`` fields repeat Table 1 as printed, even where it
differs from the dataset's own documentation (noted in ``notes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

GROUPS = ("A", "B", "C")
"""Resolution groups of seed 000: A = 10 m Sentinel, B = 6 cm UAV, C = 30-50 cm VHR."""


@dataclass(frozen=True)
class Band:
    """One spectral band (or polarisation channel for SAR)."""

    name: str
    center_nm: float | None  # None for SAR polarisations
    gsd_m: float  # native ground sample distance of this band
    fwhm_nm: float | None = None  # bandwidth (full width at half maximum), where published


@dataclass(frozen=True)
class Sensor:
    """A sensor model: band list, storage dtype and value scaling as in the real product."""

    name: str
    kind: str  # "multispectral" | "sar" | "rgb" | "panchromatic"
    bands: tuple[Band, ...]
    dtype: str  # numpy dtype of the stored product
    scaling: str  # how stored values map to physical quantities

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.bands)


# Sentinel-2 MSI: 13 bands (ESA). Centre wavelengths of S2A, rounded to nm.
SENTINEL2_BANDS = (  # name, centre nm, native GSD m, bandwidth nm (S2A, ESA)
    Band("B01", 443, 60, 21), Band("B02", 490, 10, 66), Band("B03", 560, 10, 36),
    Band("B04", 665, 10, 31), Band("B05", 705, 20, 15), Band("B06", 740, 20, 15),
    Band("B07", 783, 20, 20), Band("B08", 842, 10, 106), Band("B8A", 865, 20, 21),
    Band("B09", 945, 60, 20), Band("B10", 1375, 60, 31), Band("B11", 1610, 20, 91),
    Band("B12", 2190, 20, 175),
)


# EnMAP HSI (L2A): 224 bands, VNIR 418-993 nm (91 bands) and SWIR 902-2445 nm (133), 30 m.
# Centres: torchgeo's EnMAP.wavelengths (a test checks they agree), the defaults of the product;
# a tile's own metadata varies them slightly and wins where a reader has it.
ENMAP_CENTERS_NM = (
    418.416, 424.043, 429.457, 434.686, 439.758, 444.699, 449.539, 454.306, 459.031, 463.73,
    468.411, 473.08, 477.744, 482.411, 487.087, 491.78, 496.497, 501.243, 506.02, 510.829,
    515.672, 520.551, 525.467, 530.424, 535.422, 540.463, 545.551, 550.687, 555.873, 561.112,
    566.405, 571.756, 577.166, 582.636, 588.171, 593.773, 599.446, 605.193, 611.017, 616.923,
    622.921, 628.987, 635.112, 641.294, 647.537, 653.841, 660.207, 666.637, 673.131, 679.691,
    686.319, 693.014, 699.78, 706.617, 713.524, 720.501, 727.545, 734.654, 741.826, 749.06,
    756.353, 763.703, 771.108, 778.567, 786.078, 793.639, 801.249, 808.905, 816.608, 824.355,
    832.145, 839.976, 847.847, 855.757, 863.703, 871.683, 879.693, 887.729, 895.789, 903.87,
    911.968, 920.081, 928.204, 936.335, 944.47, 952.608, 960.748, 968.892, 977.037, 985.186,
    993.338, 901.961, 911.571, 921.32, 931.203, 941.218, 951.36, 961.628, 972.016, 982.523,
    993.144, 1003.88, 1014.72, 1025.66, 1036.7, 1047.84, 1059.07, 1070.39, 1081.78, 1093.26,
    1104.81, 1116.43, 1128.1, 1139.84, 1151.62, 1163.44, 1175.3, 1187.2, 1199.11, 1211.05, 1223,
    1234.97, 1246.94, 1258.93, 1270.92, 1282.92, 1294.91, 1306.9, 1318.88, 1330.85, 1342.82,
    1354.76, 1366.69, 1378.6, 1390.48, 1461.1, 1472.74, 1484.34, 1495.89, 1507.4, 1518.87,
    1530.29, 1541.67, 1553.01, 1564.3, 1575.55, 1586.76, 1597.91, 1609.02, 1620.09, 1631.11,
    1642.07, 1653, 1663.87, 1674.7, 1685.47, 1696.2, 1706.87, 1717.5, 1728.08, 1738.6, 1749.08,
    1759.51, 1939.14, 1948.69, 1958.2, 1967.66, 1977.08, 1986.45, 1995.79, 2005.08, 2014.33,
    2023.54, 2032.7, 2041.83, 2050.92, 2059.96, 2068.97, 2077.93, 2086.86, 2095.74, 2104.59,
    2113.4, 2122.17, 2130.9, 2139.6, 2148.26, 2156.88, 2165.47, 2174.02, 2182.53, 2191.01,
    2199.45, 2207.86, 2216.24, 2224.58, 2232.89, 2241.16, 2249.4, 2257.61, 2265.79, 2273.93,
    2282.04, 2290.12, 2298.17, 2306.19, 2314.17, 2322.13, 2330.05, 2337.94, 2345.81, 2353.64,
    2361.44, 2369.21, 2376.95, 2384.66, 2392.34, 2400, 2407.62, 2415.21, 2422.78, 2430.32,
    2437.82, 2445.3
)
ENMAP_VNIR_BANDS = 91
# nominal FWHM from the mission's specification: VNIR 8.1 nm, SWIR 12.5 nm (per-band values
# are in each tile's metadata)
ENMAP_FWHM_NM = (8.1, 12.5)
# the bands in the water-vapour absorption around 1.4 and 1.9 um, where the L2A product has no
# measurement (nodata): 127-141 and 161-167 (1-based), the 22 that HySpecNet-11k and seed 001's
# SpectralEarth leave out (202 kept), as torchgeo's EnMAP default bands do (a test checks)
ENMAP_WATER_VAPOUR = tuple(range(127, 142)) + tuple(range(161, 168))


def _wavelength_names(centers) -> list[str]:
    """Bands named by their centre (``bands.resolve_bands``' rule): ``463nm``, with one decimal
    for centres that round to the same nanometre."""
    whole = [f"{c:.0f}nm" for c in centers]
    return [f"{c:.1f}nm" if whole.count(w) > 1 else w for c, w in zip(centers, whole,
                                                                      strict=True)]


ENMAP_BANDS = tuple(
    Band(name, c, 30, ENMAP_FWHM_NM[i >= ENMAP_VNIR_BANDS])
    for i, (name, c) in enumerate(zip(_wavelength_names(ENMAP_CENTERS_NM), ENMAP_CENTERS_NM,
                                      strict=True)))


def water_vapour_bands() -> tuple[str, ...]:
    """Names of EnMAP's water-vapour bands (``ENMAP_WATER_VAPOUR``)."""
    return tuple(ENMAP_BANDS[i - 1].name for i in ENMAP_WATER_VAPOUR)


SENSORS: dict[str, Sensor] = {
    "sentinel2_l1c": Sensor(
        "Sentinel-2 MSI L1C", "multispectral", SENTINEL2_BANDS, "uint16",
        "top-of-atmosphere reflectance x 10000"),
    # L2A drops B10 (cirrus): the atmospheric correction uses it up. BigEarthNet keeps these 12.
    "sentinel2_l2a": Sensor(
        "Sentinel-2 MSI L2A", "multispectral",
        tuple(b for b in SENTINEL2_BANDS if b.name != "B10"), "uint16",
        "bottom-of-atmosphere reflectance x 10000"),
    "sentinel1_grd": Sensor(
        "Sentinel-1 C-SAR IW GRD", "sar", (Band("VV", None, 10), Band("VH", None, 10)),
        "float32", "backscatter coefficient sigma0 in dB"),
    "uav_rgb": Sensor(
        "UAV RGB camera", "rgb", (Band("R", 650, 0), Band("G", 550, 0), Band("B", 470, 0)),
        "uint8", "8-bit display-referred RGB (gamma ~2.2)"),
    "aerial_rgb": Sensor(
        "Aerial RGB camera", "rgb", (Band("R", 650, 0), Band("G", 550, 0), Band("B", 470, 0)),
        "uint8", "8-bit display-referred RGB (gamma ~2.2)"),
    "worldview3_rgb": Sensor(
        "WorldView-3 pan-sharpened RGB", "rgb",
        (Band("R", 660, 0), Band("G", 545, 0), Band("B", 480, 0)), "uint8",
        "8-bit display-referred RGB (gamma ~2.2)"),
    "worldview2_rgb": Sensor(
        "WorldView-2 pan-sharpened RGB", "rgb",
        (Band("R", 660, 0), Band("G", 545, 0), Band("B", 480, 0)), "uint8",
        "8-bit display-referred RGB (gamma ~2.2)"),
    "google_earth_rgb": Sensor(
        "Google Earth RGB", "rgb", (Band("R", 650, 0), Band("G", 550, 0), Band("B", 470, 0)),
        "uint8", "8-bit display-referred RGB (mosaics of several providers)"),
    # BigEarthNet's S1 + S2 pairs stacked (torchgeo bands='all'): float32, VV/VH in dB first,
    # then the 12 L2A bands as reflectance x 10000
    "sentinel1_sentinel2": Sensor(
        "Sentinel-1 GRD and Sentinel-2 MSI L2A", "multimodal",
        (Band("VV", None, 10), Band("VH", None, 10),
         *(b for b in SENTINEL2_BANDS if b.name != "B10")), "float32",
        "VV, VH backscatter in dB, then reflectance x 10000"),
    # SEN12MS: Sentinel-1 (VV, VH in dB) and Sentinel-2 L1C (13 bands) stacked, float32
    "sentinel1_sentinel2_l1c": Sensor(
        "Sentinel-1 GRD and Sentinel-2 MSI L1C", "multimodal",
        (Band("VV", None, 10), Band("VH", None, 10), *SENTINEL2_BANDS), "float32",
        "VV, VH backscatter in dB, then top-of-atmosphere reflectance x 10000"),
    "aerial_pan": Sensor(
        "Aerial panchromatic", "panchromatic", (Band("PAN", 625, 0),), "uint8",
        "8-bit grey level"),
    # EnMAP L2A: int16 surface reflectance x 10000, -32768 where there is no measurement
    "enmap_l2a": Sensor(
        "EnMAP HSI L2A", "hyperspectral", ENMAP_BANDS, "int16",
        "bottom-of-atmosphere reflectance x 10000; nodata -32768"),
}
ENMAP_NODATA = -32768


# --- label vocabularies -----------------------------------------------------------------------

# BigEarthNet v1.0: the 43 CORINE Land Cover level-3 classes, in the official order.
BIGEARTHNET_43 = (
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports",
    "Mineral extraction sites", "Dump sites", "Construction sites", "Green urban areas",
    "Sport and leisure facilities", "Non-irrigated arable land", "Permanently irrigated land",
    "Rice fields", "Vineyards", "Fruit trees and berry plantations", "Olive groves", "Pastures",
    "Annual crops associated with permanent crops", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland", "Moors and heathland", "Sclerophyllous vegetation",
    "Transitional woodland/shrub", "Beaches, dunes, sands", "Bare rock",
    "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes",
    "Salines", "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons",
    "Estuaries", "Sea and ocean",
)


# The 19-class nomenclature of Sumbul et al. (2020) and the 43 -> 19 mapping (by index).
BIGEARTHNET_19 = (
    "Urban fabric", "Industrial or commercial units", "Arable land", "Permanent crops",
    "Pastures", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland and sparsely vegetated areas",
    "Moors, heathland and sclerophyllous vegetation", "Transitional woodland, shrub",
    "Beaches, dunes, sands", "Inland wetlands", "Coastal wetlands", "Inland waters",
    "Marine waters",
)


BIGEARTHNET_43_TO_19 = {
    0: 0, 1: 0, 2: 1, 11: 2, 12: 2, 13: 2, 14: 3, 15: 3, 16: 3, 18: 3, 17: 4, 19: 5, 20: 6,
    21: 7, 22: 8, 23: 9, 24: 10, 25: 11, 31: 11, 26: 12, 27: 12, 28: 13, 29: 14, 33: 15,
    34: 15, 35: 16, 36: 16, 38: 17, 39: 17, 40: 18, 41: 18, 42: 18,
}  # classes 3-10, 30, 32 and 37 have no 19-class target and are dropped.


# xView (Lam et al. 2018): the 60 object classes.
XVIEW_60 = (
    "Fixed-wing Aircraft", "Small Aircraft", "Cargo Plane", "Helicopter", "Passenger Vehicle",
    "Small Car", "Bus", "Pickup Truck", "Utility Truck", "Truck", "Cargo Truck", "Truck w/Box",
    "Truck Tractor", "Trailer", "Truck w/Flatbed", "Truck w/Liquid", "Crane Truck",
    "Railway Vehicle", "Passenger Car", "Cargo Car", "Flat Car", "Tank car", "Locomotive",
    "Maritime Vessel", "Motorboat", "Sailboat", "Tugboat", "Barge", "Fishing Vessel", "Ferry",
    "Yacht", "Container Ship", "Oil Tanker", "Engineering Vehicle", "Tower crane",
    "Container Crane", "Reach Stacker", "Straddle Carrier", "Mobile Crane", "Dump Truck",
    "Haul Truck", "Scraper/Tractor", "Front loader/Bulldozer", "Excavator", "Cement Mixer",
    "Ground Grader", "Hut/Tent", "Shed", "Building", "Aircraft Hangar", "Damaged Building",
    "Facility", "Construction Site", "Vehicle Lot", "Helipad", "Storage Tank",
    "Shipping container lot", "Shipping Container", "Pylon", "Tower",
)


# Agriculture-Vision (Chiu et al.): the 9 field-anomaly classes of the 2021 release.
AGRICULTURE_VISION_9 = (
    "Double plant", "Drydown", "Endrow", "Nutrient deficiency", "Planter skip", "Storm damage",
    "Water", "Waterway", "Weed cluster",
)


# SeaDronesSee object detection v2 (Varga et al. 2022): 5 classes.
SEADRONESSEE_5 = ("Swimmer", "Boat", "Jetski", "Life-saving appliance", "Buoy")


# QFabric (Verma et al. 2021): change type (6) + change status (9) + land/urban context.
QFABRIC_CHANGE_TYPE = ("Residential", "Commercial", "Industrial", "Road", "Demolition",
                       "Mega Projects")


QFABRIC_CHANGE_STATUS = ("Prior Construction", "Greenland", "Land Cleared", "Excavation",
                         "Materials Dumped", "Construction Started", "Construction Midway",
                         "Construction Done", "Operational")


QFABRIC_LAND = ("Dense Urban", "Sparse Urban", "Rural", "Industrial Area", "Farms",
                "Barren Land", "Sparse Forest", "Dense Forest", "Lake", "River",
                "Coastal Region", "Desert", "Hills", "Snow", "Grassland", "Wetland", "Mangroves",
                "Beach")


# MAFAT satellite-vision challenge (2023): 13 object classes.
MAFAT_13 = ("Small Vehicle", "Bus", "Medium Vehicle", "Large Vehicle", "Double Trailer Truck",
            "Container", "Heavy Equipment", "Pylon", "Small Aircraft", "Large Aircraft",
            "Small Vessel", "Medium Vessel", "Large Vessel")


# Houston (Hurricane Harvey) NOAA aerial imagery, flood labels in the FloodNet style: 5 classes.
HARVEY_5 = ("Flooded building", "Non-flooded building", "Flooded road", "Non-flooded road",
            "Water")


@dataclass(frozen=True)
class Region:
    """A named lon/lat box in which a dataset's footprints are drawn."""

    name: str
    lon_min: float
    lat_min: float
    lon_max: float
    lat_max: float


@dataclass(frozen=True)
class Dataset:
    """One catalog entry: facts of the real dataset, and of seed 000's Table 1."""

    key: str
    name: str
    group: str
    problem: str
    sensor: str  # key into SENSORS
    gsd_m: float  # ground sample distance used for rendering (10 m grid for Sentinel)
    native_px: int  # typical native image side in pixels
    labels: tuple[str, ...]
    labels_status: str  # "confirmed" or a sentence saying what could not be checked offline
    regions: tuple[Region, ...]
    date_range: tuple[str, str]  # ISO dates of acquisitions
    paper_resolution_cm: float | None = None  # seed 000 Table 1 (None: not in the paper)
    paper_image_size: int | None = None
    paper_n_images: int | None = None
    paper_channels: int | None = None
    paper_n_labels: int | None = None
    pair_dataset: str | None = None  # the dataset imaging the same footprints (S1 <-> S2)
    notes: str = ""
    reader: str = ""  # the reader of its published files (config.READERS), where there is one
    format_status: str = ""  # what of that format was confirmed, and against what
    label_kind: str = "area"  # "area": land cover/regions; "object": discrete instances;
    #                           "scene": one class per image; "caption": captions, no labels
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def sensor_spec(self) -> Sensor:
        return self.extra.get("sensor_spec") or SENSORS[self.sensor]

    @property
    def bands(self) -> tuple[str, ...]:
        return self.sensor_spec.band_names


_BIGEARTHNET_REGIONS = (
    Region("Austria", 9.6, 46.4, 17.1, 49.0), Region("Belgium", 2.6, 49.5, 6.4, 51.5),
    Region("Finland", 21.0, 60.0, 30.0, 68.0), Region("Ireland", -10.4, 51.5, -6.0, 55.3),
    Region("Kosovo", 20.0, 41.9, 21.8, 43.2), Region("Lithuania", 21.0, 54.0, 26.8, 56.4),
    Region("Luxembourg", 5.7, 49.4, 6.5, 50.2), Region("Portugal", -9.5, 37.0, -6.2, 42.1),
    Region("Serbia", 19.0, 42.3, 22.9, 46.1), Region("Switzerland", 6.0, 45.8, 10.5, 47.8),
)


DATASETS: dict[str, Dataset] = {d.key: d for d in (
    Dataset(
        key="bigearthnet_s2", reader="torchgeo",
        format_status="confirmed: BigEarthNet v1 patch folders (real sample files in tests), read"
                      " by torchgeo's BigEarthNet",
        name="BigEarthNet-S2", group="A", problem="image classification",
        sensor="sentinel2_l2a", gsd_m=10.0, native_px=120, labels=BIGEARTHNET_43,
        labels_status="confirmed (BigEarthNet v1.0; cross-checked against torchgeo in tests)",
        regions=_BIGEARTHNET_REGIONS, date_range=("2017-06-01", "2018-05-31"),
        paper_resolution_cm=1000, paper_image_size=128, paper_n_images=590326,
        paper_channels=3, paper_n_labels=43, pair_dataset="bigearthnet_s1",
        notes="Table 1 lists 3 channels (the paper trained on RGB); the real product has 12 "
              "L2A bands at 10/20/60 m, all kept here and resampled to the 10 m grid."),
    Dataset(
        key="bigearthnet_s1", reader="torchgeo",
        format_status="confirmed: BigEarthNet-S1 v1 patch folders (real sample files in tests), "
                      "read by torchgeo's BigEarthNet",
        name="BigEarthNet-S1", group="A", problem="image classification",
        sensor="sentinel1_grd", gsd_m=10.0, native_px=120, labels=BIGEARTHNET_43,
        labels_status="confirmed (labels of the Sentinel-2 twin patch)",
        regions=_BIGEARTHNET_REGIONS, date_range=("2017-06-01", "2018-05-31"),
        paper_resolution_cm=500, paper_image_size=120, paper_n_images=590326,
        paper_channels=2, paper_n_labels=43, pair_dataset="bigearthnet_s2",
        notes="Table 1 lists 500 cm; BigEarthNet-S1 patches are on the same 10 m grid as S2."),
    Dataset(
        key="agriculture_vision", reader="agriculture_vision",
        format_status="layout of the 2020 README (images/rgb, images/nir, boundaries, masks, "
                      "labels/<class>) confirmed; the 2021 class folders and 255 = "
                      "valid/inside/present from the challenge-winning loader, not from the "
                      "release itself",
        name="Agriculture-Vision", group="B", problem="segmentation",
        sensor="uav_rgb", gsd_m=0.06, native_px=512, labels=AGRICULTURE_VISION_9,
        labels_status="confirmed (9 anomaly classes of the 2021 release, consistent with "
                      "seed 000 Fig. 2)",
        regions=(Region("US Midwest farmland", -96.5, 38.5, -84.5, 44.5),),
        date_range=("2017-04-01", "2019-10-31"),
        paper_resolution_cm=6, paper_image_size=512, paper_n_images=8345, paper_channels=3,
        paper_n_labels=9,
        notes="Called Agriculture-2017 in seed 000. The real imagery is aerial RGB+NIR at "
              "10-20 cm; Table 1's 6 cm UAV RGB is what is simulated."),
    Dataset(
        key="seadronessee", reader="coco",
        format_status="confirmed against the published instances_val.json of object detection v2 "
                      "(categories 0-5, bbox x/y/w/h, per-image meta with two flight-record "
                      "schemas)",
        name="SeaDronesSee v2", group="B", problem="object detection",
        sensor="uav_rgb", gsd_m=0.06, native_px=1230, labels=SEADRONESSEE_5,
        labels_status="confirmed (object-detection v2 classes)",
        regions=(Region("Lake Constance", 9.0, 47.45, 9.75, 47.8),),
        date_range=("2020-06-01", "2021-09-30"), label_kind="object",
        paper_resolution_cm=6, paper_image_size=1230, paper_n_images=14227, paper_channels=3,
        paper_n_labels=5),
    Dataset(
        key="xview", reader="xview",
        format_status="type ids and bounds_imcoords confirmed from the xView baseline code; the "
                      "GeoTIFFs' band layout (3-band 8-bit RGB) is inferred, not checked against "
                      "the files",
        name="xView", group="C", problem="object detection",
        sensor="worldview3_rgb", gsd_m=0.30, native_px=3320, labels=XVIEW_60,
        labels_status="confirmed (xView's 60 classes)", label_kind="object",
        regions=(Region("Gulf coast", -97.5, 27.5, -94.0, 30.5),
                 Region("Eastern Mediterranean", 29.0, 30.0, 36.0, 36.0),
                 Region("East Africa", 32.0, -6.0, 40.0, 2.0),
                 Region("South Asia", 72.0, 18.0, 80.0, 28.0),
                 Region("Western Europe", -1.0, 43.0, 8.0, 51.0)),
        date_range=("2015-01-01", "2017-12-31"),
        paper_resolution_cm=30, paper_image_size=3320, paper_n_images=5630, paper_channels=3,
        paper_n_labels=60,
        notes="Regions are coarse stand-ins: xView spans many countries; exact locations are "
              "not published with the imagery."),
    Dataset(
        key="qfabric", reader="qfabric",
        format_status="unconfirmed: the vectors/<split>/COCO layout (metadata.json options, per-"
                      "location files with per-date status) is what public loading code reads; "
                      "the release itself could not be checked offline, nor its image format",
        name="QFabric", group="C", problem="change detection",
        sensor="worldview2_rgb", gsd_m=0.50, native_px=20480,
        labels=QFABRIC_CHANGE_TYPE + QFABRIC_CHANGE_STATUS + QFABRIC_LAND,
        labels_status="the simulator's: change types (6) and statuses (9) are QFabric's; the "
                      "18 land/urban context classes are reconstructed so that the total "
                      "matches the 33 labels of seed 000 Table 2 and include every context "
                      "class seed 000 Fig. 2 shows. Real files: the qfabric reader takes the "
                      "release's own vocabulary from its metadata.json (32 names in public "
                      "code that reads it, Materials Introduced, Urban Slum, Coastal and "
                      "Grass Land among them; data/sources/qfabric.py)",
        regions=(Region("Indian subcontinent", 72.0, 12.0, 88.0, 29.0),
                 Region("Middle East", 44.0, 23.0, 56.0, 30.0),
                 Region("North America", -122.0, 30.0, -75.0, 45.0),
                 Region("Europe", -5.0, 40.0, 25.0, 55.0)),
        date_range=("2014-01-01", "2020-12-31"),
        paper_resolution_cm=50, paper_image_size=20480, paper_n_images=504, paper_channels=3,
        paper_n_labels=33,
        notes="A change-detection dataset of 5-date series; one date is simulated."),
    Dataset(
        key="houston_harvey", reader="class_masks",
        format_status="unconfirmed which release seed 000 used; read in FloodNet-Supervised "
                      "v1.0's layout (<split>-org-img, <split>-label-img/<id>_lab.png, indices "
                      "0-9) from third-party audits of that release, its classes 1-5 mapped to "
                      "the five labels",
        name="Houston Harvey NOAA", group="C", problem="segmentation",
        sensor="aerial_rgb", gsd_m=0.20, native_px=2560, labels=HARVEY_5,
        labels_status="unconfirmed: seed 000 gives 5 labels without names; these are the "
                      "flood classes of the FloodNet family (cited by seed 000 as [7])",
        regions=(Region("Houston", -95.8, 29.5, -95.0, 30.1),),
        date_range=("2017-08-27", "2017-09-07"),
        paper_resolution_cm=20, paper_image_size=2560, paper_n_images=32818, paper_channels=3,
        paper_n_labels=5),
    Dataset(
        key="mafat", reader="dota",
        format_status="from participants' code and label files: 1280-px 16-bit single-band "
                      "frames, DOTA rows without header or difficulty; the image file extension "
                      "and metadata fields are not confirmed",
        name="MAFAT", group="C", problem="object detection",
        sensor="aerial_pan", gsd_m=0.40, native_px=1280, labels=MAFAT_13,
        labels_status="unconfirmed: 13 classes as in the MAFAT 2023 satellite-vision "
                      "challenge, consistent with seed 000 Fig. 2 (vehicles, containers, "
                      "vessels, aircraft); could not be checked offline",
        regions=(Region("Eastern Mediterranean coast", 34.2, 31.0, 35.6, 33.2),),
        date_range=("2019-01-01", "2022-12-31"), label_kind="object",
        paper_resolution_cm=40, paper_image_size=1280, paper_n_images=9715, paper_channels=1,
        paper_n_labels=13,
        notes="The imagery's location is not published; the region is a stand-in."),
)}


PAPER_PATCH_PX = 512  # seed 000 cut segmentation and detection images into 512 x 512 patches


def paper_patches(key: str) -> int:
    """Patches a Table 1 dataset gives when its images are cut as seed 000 describes: whole
    512-px patches of each image (``(size // 512) ** 2``, at least 1: smaller images are one
    pair each), times its number of images. Over the eight datasets that is 3.11 M pairs; the
    paper reports about 4.5 M without saying how it cut edges or QFabric's five dates, so the
    shares, not the total, are what this reproduces."""
    d = DATASETS[key]
    if d.paper_n_images is None or d.paper_image_size is None:
        raise KeyError(f"{key} is not in seed 000's Table 1")
    return d.paper_n_images * max(d.paper_image_size // PAPER_PATCH_PX, 1) ** 2


# --- real datasets read from disk (issue 5); not part of seed 000's groups --------------------

EUROSAT_10 = ("Annual crop", "Forest", "Herbaceous vegetation", "Highway", "Industrial",
              "Pasture", "Permanent crop", "Residential", "River", "Sea or lake")


UCMERCED_21 = ("Agricultural", "Airplane", "Baseball diamond", "Beach", "Buildings",
               "Chaparral", "Dense residential", "Forest", "Freeway", "Golf course", "Harbor",
               "Intersection", "Medium residential", "Mobile home park", "Overpass",
               "Parking lot", "River", "Runway", "Sparse residential", "Storage tanks",
               "Tennis court")


RESISC45_45 = (
    "Airplane", "Airport", "Baseball diamond", "Basketball court", "Beach", "Bridge",
    "Chaparral", "Church", "Circular farmland", "Cloud", "Commercial area", "Dense residential",
    "Desert", "Forest", "Freeway", "Golf course", "Ground track field", "Harbor",
    "Industrial area", "Intersection", "Island", "Lake", "Meadow", "Medium residential",
    "Mobile home park", "Mountain", "Overpass", "Palace", "Parking lot", "Railway",
    "Railway station", "Rectangular farmland", "River", "Roundabout", "Runway", "Sea ice",
    "Ship", "Snowberg", "Sparse residential", "Stadium", "Storage tank", "Tennis court",
    "Terrace", "Thermal power station", "Wetland")


# IGBP land-cover classes of MODIS MCD12Q1 (codes 1-17), as used by SEN12MS.
IGBP_17 = ("Evergreen needleleaf forests", "Evergreen broadleaf forests",
           "Deciduous needleleaf forests", "Deciduous broadleaf forests", "Mixed forests",
           "Closed shrublands", "Open shrublands", "Woody savannas", "Savannas", "Grasslands",
           "Permanent wetlands", "Croplands", "Urban and built-up lands",
           "Cropland/natural vegetation mosaics", "Permanent snow and ice", "Barren",
           "Water bodies")


_WORLD = (Region("World", -180.0, -60.0, 180.0, 75.0),)


_EUROPE = (Region("Europe", -10.0, 35.0, 30.0, 60.0),)


_USA = (Region("USA", -125.0, 25.0, -67.0, 49.0),)


def _real(key, name, problem, sensor, gsd_m, native_px, labels, regions, kind, notes="",
          pair=None):
    return Dataset(key=key, name=name, group="real", problem=problem, sensor=sensor,
                   gsd_m=gsd_m, native_px=native_px, labels=labels, pair_dataset=pair,
                   labels_status="confirmed (class list of the dataset; cross-checked against "
                                 "torchgeo in tests)" if labels else "captions only",
                   regions=regions, date_range=("", ""), label_kind=kind, notes=notes)


REAL_DATASETS: dict[str, Dataset] = {d.key: d for d in (
    _real("bigearthnet_s2_19", "BigEarthNet-S2 (19 classes)", "multi-label classification",
          "sentinel2_l2a", 10.0, 120, BIGEARTHNET_19, _EUROPE, "area",
          "The 19-class nomenclature of Sumbul et al. (2020).", pair="bigearthnet_s1_19"),
    _real("bigearthnet_s1_19", "BigEarthNet-S1 (19 classes)", "multi-label classification",
          "sentinel1_grd", 10.0, 120, BIGEARTHNET_19, _EUROPE, "area",
          pair="bigearthnet_s2_19"),
    _real("bigearthnet_s1s2", "BigEarthNet S1+S2 pairs", "multi-label classification",
          "sentinel1_sentinel2", 10.0, 120, BIGEARTHNET_43, _EUROPE, "area",
          "Co-registered Sentinel-1 and Sentinel-2 patches stacked (14 bands)."),
    _real("bigearthnet_v2_s2", "BigEarthNet v2 (reBEN) Sentinel-2", "multi-label classification",
          "sentinel2_l2a", 10.0, 120, BIGEARTHNET_19, _EUROPE, "area",
          "Improved labels and geographic splits (Clasen et al. 2024); 19 classes.",
          pair="bigearthnet_v2_s1"),
    _real("bigearthnet_v2_s1", "BigEarthNet v2 (reBEN) Sentinel-1", "multi-label classification",
          "sentinel1_grd", 10.0, 120, BIGEARTHNET_19, _EUROPE, "area",
          pair="bigearthnet_v2_s2"),
    _real("ssl4eo_s12_s2c", "SSL4EO-S12 Sentinel-2 L1C", "self-supervised pretraining",
          "sentinel2_l1c", 10.0, 264, (), _WORLD, "unlabelled",
          "Unlabelled: for self-supervised encoders (issue 8); 4 seasons per location.",
          pair="ssl4eo_s12_s1"),
    _real("ssl4eo_s12_s2a", "SSL4EO-S12 Sentinel-2 L2A", "self-supervised pretraining",
          "sentinel2_l2a", 10.0, 264, (), _WORLD, "unlabelled",
          "SSL4EO-S12's s2a folder: the L2A product (12 bands, no B10), the level of "
          "BigEarthNet; unlabelled.", pair="ssl4eo_s12_s1"),
    _real("ssl4eo_s12_s1", "SSL4EO-S12 Sentinel-1 GRD", "self-supervised pretraining",
          "sentinel1_grd", 10.0, 264, (), _WORLD, "unlabelled", pair="ssl4eo_s12_s2c"),
    _real("hyspecnet11k", "HySpecNet-11k", "self-supervised pretraining", "enmap_l2a", 30.0,
          128, (), _WORLD, "unlabelled",
          "11,483 EnMAP L2A patches of 128 x 128 px, 224 bands (the 22 water-vapour bands are "
          "nodata), for self-supervised learning; torchgeo's HySpecNet11k reads them."),
    _real("spectral_earth", "SpectralEarth (EnMAP)", "self-supervised pretraining",
          "enmap_l2a", 30.0, 128, (), _WORLD, "unlabelled",
          "Seed 001's pretraining data: EnMAP L2A patches of 128 x 128 px with 202 bands (the "
          "water-vapour bands removed), one or more acquisitions per location; the "
          "spectral_earth reader reads the authors' layout."),
    _real("sen12ms", "SEN12MS", "multi-label classification", "sentinel1_sentinel2_l1c", 10.0,
          256, IGBP_17, _WORLD, "area",
          "Labels: the IGBP classes of the MODIS land-cover layer covering at least 1 % of a "
          "patch (the layer is 500 m data resampled to 10 m)."),
    _real("eurosat", "EuroSAT (13 bands)", "scene classification", "sentinel2_l1c", 10.0, 64,
          EUROSAT_10, _EUROPE, "scene", "Band order in the files: B01-B12, then B8A."),
    _real("eurosat_rgb", "EuroSAT (RGB)", "scene classification", "sentinel2_l1c", 10.0, 64,
          EUROSAT_10, _EUROPE, "scene", "B04, B03, B02 of the 13-band files."),
    _real("ucmerced", "UC Merced Land Use", "scene classification", "aerial_rgb", 0.3048, 256,
          UCMERCED_21, _USA, "scene", "USGS National Map orthoimagery, 1 ft."),
    _real("resisc45", "NWPU-RESISC45", "scene classification", "google_earth_rgb", 0.5, 256,
          RESISC45_45, _WORLD, "scene", "Google Earth; 0.2-30 m per image (0.5 m nominal)."),
    _real("rsicd", "RSICD", "image captioning", "google_earth_rgb", 0.5, 224, (), _WORLD,
          "caption", "10,921 images, 5 captions each (Lu et al. 2017)."),
    _real("ucm_captions", "UCM-Captions", "image captioning", "aerial_rgb", 0.3048, 256, (),
          _USA, "caption", "UC Merced images with 5 captions each (Qu et al. 2016)."),
    _real("sydney_captions", "Sydney-Captions", "image captioning", "google_earth_rgb", 0.5, 500,
          (), (Region("Sydney", 150.5, -34.2, 151.5, -33.5),), "caption"),
    _real("rsitmd", "RSITMD", "image-text retrieval", "google_earth_rgb", 0.5, 256, (),
          _WORLD, "caption", "4,743 images, 5 captions each (Yuan et al. 2022)."),
    _real("example_captions", "Example image-text corpus", "image-text retrieval",
          "aerial_rgb", 0.3, 96, (), _WORLD, "caption",
          "Written by `geofm example-corpus` from the simulator in the Karpathy format, to run "
          "the image-text path without downloading a corpus."),
)}


PAPER_DATASETS = dict(DATASETS)

# seed 001's hyperspectral downstream task, simulated (not one of seed 000's groups)
HYPERSPECTRAL_DATASETS: dict[str, Dataset] = {d.key: d for d in (
    Dataset(
        key="enmap_corine", reader="geotiff", name="EnMAP-CORINE", group="H",
        format_status="EnMAP L2A products as DLR delivers them (a folder with "
                      "<product>-SPECTRAL_IMAGE.TIF, 224 int16 bands, nodata -32768, and "
                      "<product>-METADATA.XML with each band's measured centre and width) read "
                      "by the geotiff reader with the folder as root; single GeoTIFF tiles "
                      "with options.sensor: enmap. Both tested on files written in those "
                      "layouts; the benchmark's own patch files were not available to check",
        problem="multi-label classification", sensor="enmap_l2a", gsd_m=30.0, native_px=128,
        labels=BIGEARTHNET_43,
        labels_status="CORINE Land Cover level 3 (BigEarthNet's 43 classes, which "
                      "BIGEARTHNET_43_TO_19 maps to the 19-class nomenclature whose names seed "
                      "001's EnMAP-CORINE figure shows); the benchmark's own class list could "
                      "not be checked offline",
        regions=_BIGEARTHNET_REGIONS, date_range=("2022-11-02", "2024-10-31"),
        notes="Seed 001's EnMAP-CORINE: EnMAP L2A patches of 128 x 128 px at 30 m with CORINE "
              "labels (SpectralEarth's multi-label task). Simulated here with the 224 EnMAP "
              "bands, their water-vapour bands as nodata; real tiles come through the geotiff "
              "reader with options.sensor: enmap."),
)}
DATASETS.update(HYPERSPECTRAL_DATASETS)

SIMULATED = (*PAPER_DATASETS, *HYPERSPECTRAL_DATASETS)
"""The datasets the embedded simulator draws (``data.simulate.RECIPES`` holds one recipe each):
seed 000's eight and seed 001's EnMAP-CORINE; every other dataset needs a real source."""
DATASETS.update(REAL_DATASETS)


def pair_family(key: str) -> str:
    """One name for datasets imaging the same places (S1 and S2 of BigEarthNet, SSL4EO-S12):
    seeds drawn from it pick the same places and splits for both sensors."""
    pair = DATASETS[key].pair_dataset if key in DATASETS else None
    return min(key, pair) if pair else key


GROUP_DATASETS: dict[str, tuple[str, ...]] = {
    g: tuple(k for k, d in DATASETS.items() if d.group == g) for g in GROUPS
}


GROUP_DATASETS["all"] = tuple(PAPER_DATASETS)  # the compiled dataset of seed 000


GROUP_DATASETS["custom"] = tuple(DATASETS)  # any catalog dataset, named in `datasets`
GROUP_DATASETS["H"] = tuple(HYPERSPECTRAL_DATASETS)  # seed 001's hyperspectral data


def group_of(datasets) -> list[str]:
    """Each dataset's resolution group (A, B, C, H), "custom" for a dataset of one's own."""
    return [DATASETS[d].group if d in DATASETS else "custom" for d in datasets]


def datasets_for(group: str) -> tuple[str, ...]:
    """Dataset keys of a resolution group ("A", "B", "C") or of "all".

    Raises:
        ValueError: for an unknown group, naming the valid ones.
    """
    if group not in GROUP_DATASETS:
        raise ValueError(f"unknown group {group!r}; choose one of {', '.join(GROUP_DATASETS)}")
    return GROUP_DATASETS[group]


def get_dataset(key: str) -> Dataset:
    """Look a dataset up by key, with an error that lists the valid keys."""
    if key not in DATASETS:
        raise KeyError(f"unknown dataset {key!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[key]


def dataset_from_card(key: str, card: dict) -> Dataset:
    """The catalog entry of a user's dataset card (``config.DatasetCard`` as a dict): its sensor
    from the catalog, or one made of the card's bands."""
    extra = {"card": True}
    sensor = card.get("sensor")
    if sensor is None:
        bands = tuple(Band(b["name"], b.get("center_nm"), card["gsd_m"], b.get("fwhm_nm"))
                      for b in card["bands"])
        kind = "sar" if all(b.get("polarisation") for b in card["bands"]) else "multispectral"
        extra["sensor_spec"] = Sensor(card.get("name") or key, kind, bands, "as stored",
                                      card.get("units") or "as stored")
        sensor = f"card:{key}"
    return Dataset(key, card.get("name") or key, card.get("group", "custom"), "user dataset",
                   sensor, float(card["gsd_m"]), 0, tuple(card.get("labels") or ()),
                   "declared in a dataset card", (), ("", ""), notes="from a dataset card",
                   label_kind=card.get("label_kind", "area"), extra=extra)
