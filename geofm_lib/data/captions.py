"""Captions from labels, and the zero-shot prompts built from the same templates.

Training captions and evaluation prompts come from this one module so the two agree: a model
trained on "an overhead image showing pastures and mixed forest" is asked at evaluation time
about "an overhead image showing pastures". With ``metadata=True`` the sensor and the ground
resolution lead the caption, as in seed 000's Table 4 ("a WorldView-3 image at 30 cm
resolution showing ...").
"""

from __future__ import annotations

import zlib

import numpy as np

from geofm_lib.catalog import DATASETS, SENSORS, get_dataset

# {image} is the image phrase, {labels} the joined label list.
TEMPLATES = (
    "{image} showing {labels}.",
    "{image} of {labels}.",
    "{image} with {labels}.",
    "{labels} seen in {image}.",
    "{image} that contains {labels}.",
)


PROMPT_TEMPLATE = TEMPLATES[0]


_PLAIN_IMAGE = ("an overhead image", "a remote sensing image", "an image from above")


EMPTY_LABELS = "no labelled objects"


def format_gsd(gsd_m: float) -> str:
    """Ground resolution as people write it: '10 m', '30 cm', '6 cm'."""
    return f"{gsd_m:g} m" if gsd_m >= 1 else f"{gsd_m * 100:g} cm"


def sensor_phrase(dataset: str) -> str:
    """'a Sentinel-2 MSI L2A image at 10 m resolution' for the dataset's sensor and GSD."""
    ds = get_dataset(dataset)
    name = SENSORS[ds.sensor].name
    article = "an" if name[0].lower() in "aeiou" else "a"
    return f"{article} {name} image at {format_gsd(ds.gsd_m)} resolution"


def join_labels(labels: list[str]) -> str:
    """'a', 'a and b', 'a, b and c' (lower-cased), or the empty-label phrase."""
    names = [label.lower() for label in labels]
    if not names:
        return EMPTY_LABELS
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


METADATA_FIELDS = ("sensor", "gsd", "date", "season", "place")
"""What ``caption_metadata`` may list (RS5M's metadata captions): the sensor, the ground
sampling distance, the acquisition date, its season (by hemisphere) and the place (the
footprint's region where the source names one, and its centre in degrees). ``true`` is
seed 000's Table 4: sensor and resolution."""

DATASET_FIELDS = ("sensor", "gsd")
"""The fields a dataset has as a whole: the only ones its zero-shot prompts carry (the date,
season and place of each image would make each image's prompts its own)."""

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")


def metadata_fields(metadata) -> tuple[str, ...]:
    """The caption fields of a ``caption_metadata`` value: () for false, seed 000's sensor and
    resolution for true, else the fields listed (in :data:`METADATA_FIELDS` order)."""
    if metadata is True:
        return DATASET_FIELDS
    if not metadata:
        return ()
    unknown = [f for f in metadata if f not in METADATA_FIELDS]
    if unknown:
        raise ValueError(f"caption_metadata: {unknown} unknown; list any of "
                         f"{', '.join(METADATA_FIELDS)} (or true for sensor and gsd)")
    return tuple(f for f in METADATA_FIELDS if f in metadata)


def season(date: str, lat: float | None) -> str | None:
    """Meteorological season of an ISO date at a latitude (the south's are the north's turned
    half a year; None without a date)."""
    if not date:
        return None
    month = int(str(date)[5:7])
    north = ("winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer",
             "autumn", "autumn", "autumn", "winter")[month - 1]
    if lat is not None and lat < 0:
        return {"winter": "summer", "summer": "winter", "spring": "autumn",
                "autumn": "spring"}[north]
    return north


def _degrees(lon: float, lat: float) -> str:
    return (f"{abs(lat):.1f}\N{DEGREE SIGN} {'N' if lat >= 0 else 'S'}, "
            f"{abs(lon):.1f}\N{DEGREE SIGN} {'E' if lon >= 0 else 'W'}")


def metadata_phrase(fields, dataset: str | None, meta: dict | None = None) -> str:
    """The image phrase of a caption with metadata, RS5M-style: 'a Sentinel-2 MSI L2A image
    at 10 m resolution taken on 30 September 2017 (autumn) near Luxembourg (49.9° N, 6.2° E)'.
    ``meta``: the sample's metadata (sensor, gsd_m, date, footprint), else the dataset's
    catalog entry gives sensor and resolution; a field the sample lacks is left out."""
    meta = meta or {}
    known = dataset in DATASETS
    sensor = meta.get("sensor") or (SENSORS[get_dataset(dataset).sensor].name if known else None)
    gsd = meta.get("gsd_m") or (get_dataset(dataset).gsd_m if known else None)
    if "sensor" in fields and sensor:
        article = "an" if sensor[0].lower() in "aeiou" else "a"
        text = f"{article} {sensor} image"
    else:
        text = "an overhead image"
    if "gsd" in fields and gsd:
        text += f" at {format_gsd(float(gsd))} resolution"
    fp = meta.get("footprint") or {}
    date = meta.get("date") or fp.get("date")
    centre = fp.get("center")
    if date and "date" in fields:
        y, m, d = str(date)[:10].split("-")
        text += f" taken on {int(d)} {_MONTHS[int(m) - 1]} {y}"
        if "season" in fields:
            text += f" ({season(date, centre[1] if centre else None)})"
    elif date and "season" in fields:
        text += f" taken in {season(date, centre[1] if centre else None)} {str(date)[:4]}"
    if "place" in fields and (centre or fp.get("region")):
        where = fp.get("region")
        coords = _degrees(*centre) if centre else None
        text += f" near {where} ({coords})" if where and coords else f" near {where or coords}"
    return text


def caption(dataset: str, labels: list[str], metadata=False, seed: int = 0,
            index: int = 0, meta: dict | None = None) -> str:
    """A training caption for a sample; template and wording vary with (seed, dataset, index).

    The label order is shuffled too, so a text encoder cannot learn position instead of content.
    ``metadata``: ``caption_metadata`` (false, true, or a list of :data:`METADATA_FIELDS`,
    taken from the sample's ``meta``).
    """
    rng = np.random.default_rng([seed, zlib.crc32(dataset.encode()), index, 7])
    order = list(labels)
    rng.shuffle(order)
    if metadata is True:  # seed 000's Table 4, word for word as before
        image = sensor_phrase(dataset)
    elif metadata:
        image = metadata_phrase(metadata_fields(metadata), dataset, meta)
    else:
        image = _PLAIN_IMAGE[rng.integers(len(_PLAIN_IMAGE))]
    text = TEMPLATES[rng.integers(len(TEMPLATES))].format(image=image, labels=join_labels(order))
    return text[0].upper() + text[1:]


def label_prompts(dataset: str, metadata: bool = False,
                  vocabulary: tuple[str, ...] | None = None) -> list[str]:
    """One zero-shot prompt per label of the dataset, in vocabulary order.

    ``vocabulary`` serves datasets outside the catalog (e.g. a GeoTIFF scene whose labels come
    from its vector file); their prompts have no sensor phrase.
    """
    known = dataset in DATASETS
    labels = vocabulary if vocabulary is not None else get_dataset(dataset).labels
    fields = [f for f in metadata_fields(metadata) if f in DATASET_FIELDS]
    if metadata is True and known:
        image = sensor_phrase(dataset)
    elif fields and known:
        image = metadata_phrase(fields, dataset)
    else:
        image = _PLAIN_IMAGE[0]
    prompts = [PROMPT_TEMPLATE.format(image=image, labels=label.lower()) for label in labels]
    return [p[0].upper() + p[1:] for p in prompts]
