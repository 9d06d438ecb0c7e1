"""Dense labels of a patch, as its shard sample carries them (segmentation, seed 001).

Two optional members beside the image, each a one-band 8-bit PNG of the patch's size:

* ``mask.png``: the class of each pixel, an index into the dataset's label vocabulary (the
  manifest's ``vocabulary``), or one of three codes:
  ``MASK_BACKGROUND`` (250) a valid pixel of no vocabulary class (an unlabelled surface:
  FloodNet's background, the simulator's unlabelled areas), scored as a class of its own;
  ``MASK_SEVERAL`` (254) a pixel that two or more classes claim (overlapping annotation masks,
  as Agriculture-Vision's), and ``MASK_NODATA`` (255) a pixel outside the valid area; both
  are left out of training losses and scores.
* ``trees.png``: tree cover of each pixel in percent (0-100), seed 001's forest use case
  (tree density; a pixel with at least ``TREE_PIXEL_PERCENT`` is a tree pixel).

The sample's ``json`` lists the members it has under ``dense``.
"""

from __future__ import annotations

import numpy as np

MASK_BACKGROUND = 250
MASK_SEVERAL = 254
MASK_NODATA = 255
IGNORED = (MASK_SEVERAL, MASK_NODATA)
TREE_PIXEL_PERCENT = 50

DENSE_MEMBERS = ("mask", "trees")


def mask_classes(vocabulary) -> list[str]:
    """Names of the segmentation classes of a vocabulary: its labels, then ``background``."""
    return [*vocabulary, "background"]


def to_class_index(mask: np.ndarray, n_labels: int) -> np.ndarray:
    """A stored mask as training targets: vocabulary indices stay, background becomes
    ``n_labels`` (the last class of :func:`mask_classes`), ignored pixels -1."""
    out = mask.astype(np.int64)
    out[mask == MASK_BACKGROUND] = n_labels
    out[np.isin(mask, IGNORED)] = -1
    bad = (out >= 0) & (out > n_labels)
    if bad.any():
        raise ValueError(f"mask values {sorted(set(np.unique(mask[bad]).tolist()))} are neither "
                         f"vocabulary indices (0-{n_labels - 1}) nor the codes 250, 254, 255")
    return out


def from_class_masks(classes: dict[str, np.ndarray], vocabulary, valid: np.ndarray | None
                     ) -> np.ndarray:
    """A stored mask from one boolean mask per label (annotation readers): the label's
    index where one label claims a pixel, ``MASK_SEVERAL`` where more do, background where
    none does, ``MASK_NODATA`` outside ``valid``."""
    shape = valid.shape if valid is not None else next(iter(classes.values())).shape
    out = np.full(shape, MASK_BACKGROUND, np.uint8)
    claims = np.zeros(shape, np.uint8)
    for label, m in classes.items():
        out[m] = list(vocabulary).index(label)
        claims += m.astype(np.uint8)
    out[claims > 1] = MASK_SEVERAL
    if valid is not None:
        out[~valid] = MASK_NODATA
    return out
