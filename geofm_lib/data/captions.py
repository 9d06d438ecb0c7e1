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


def caption(dataset: str, labels: list[str], metadata: bool = False, seed: int = 0,
            index: int = 0) -> str:
    """A training caption for a sample; template and wording vary with (seed, dataset, index).

    The label order is shuffled too, so a text encoder cannot learn position instead of content.
    """
    rng = np.random.default_rng([seed, zlib.crc32(dataset.encode()), index, 7])
    order = list(labels)
    rng.shuffle(order)
    image = sensor_phrase(dataset) if metadata else _PLAIN_IMAGE[rng.integers(len(_PLAIN_IMAGE))]
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
    image = sensor_phrase(dataset) if metadata and known else _PLAIN_IMAGE[0]
    prompts = [PROMPT_TEMPLATE.format(image=image, labels=label.lower()) for label in labels]
    return [p[0].upper() + p[1:] for p in prompts]
