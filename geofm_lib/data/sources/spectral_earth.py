"""SpectralEarth (Braham et al. 2024, seed 001's pretraining data) and its downstream
EnMAP-CORINE task, in the layout of the authors' release.

Layout (``root``)::

    enmap/<location>/<acquisition>.tif    pretraining (dataset ``spectral_earth``): 128 x 128 px
                                          EnMAP L2A patches, 202 int16 bands (EnMAP's 224 without
                                          its 22 water-vapour bands), one or more acquisitions
                                          of each location
    enmap/<sample>.tif                    EnMAP-CORINE (dataset ``enmap_corine``): the image
    corine/<sample>.tif                   its CORINE Land Cover raster: level-3 codes (111-523)
    splits/enmap_corine/{train,val,test}.txt   sample file names, one per line (optional;
                                          ``splits: official`` uses them, test read as val)

The patch files carry no band wavelengths: their 202 bands are EnMAP's bands 1-126, 142-160
and 168-224 in that order (SpectralEarth's and torchgeo's ``EnMAP.default_bands``), so the
reader names them from the catalog by that list and refuses a file with another band count.
Where a file does describe its bands with wavelengths, they must match (5 nm).

Labels: a CORINE class is in a patch when at least one of its pixels is (SpectralEarth's
rule; ``options.min_mask_share`` sets a share instead). Code 335 (glaciers) is no label of the
43-class nomenclature and 0 is no data; any other value is an error naming the file
(``on_bad: skip`` leaves the sample out and counts it). Samples listed in no split file, and
acquisitions of a location beyond its first (by name), are not used and are counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from geofm_lib.bands import resolve_bands
from geofm_lib.catalog import BIGEARTHNET_43, ENMAP_BANDS, ENMAP_NODATA, ENMAP_WATER_VAPOUR
from geofm_lib.config import Config
from geofm_lib.data.sources.annotated import (
    AnnotatedSource,
    Item,
    Problems,
    image_size,
    open_root,
    reader_options,
)
from geofm_lib.errors import ConfigError, DataError

# CORINE Land Cover level-3 codes in the order of the 43-class nomenclature (BigEarthNet's,
# SpectralEarth's): 335 (glaciers and perpetual snow) is not one of the 43
CLC_CODES = (111, 112, 121, 122, 123, 124, 131, 132, 133, 141, 142, 211, 212, 213, 221, 222,
             223, 231, 241, 242, 243, 244, 311, 312, 313, 321, 322, 323, 324, 331, 332, 333,
             334, 411, 412, 421, 422, 423, 511, 512, 521, 522, 523)
CLC_NOT_LABELS = {0: "no data", 335: "glaciers and perpetual snow"}
SPECTRAL_EARTH_BANDS = tuple(b for i, b in enumerate(ENMAP_BANDS, start=1)
                             if i not in ENMAP_WATER_VAPOUR)  # 202
ANY_PIXEL = 1e-9  # min_mask_share: a class is in a patch with one pixel


def spectral_earth_bands(dataset: str, where: str):
    """Band records of SpectralEarth's 202 bands: the catalog's EnMAP names and centres."""
    return resolve_bands([b.name for b in SPECTRAL_EARTH_BANDS],
                         wavelengths_nm=[b.center_nm for b in SPECTRAL_EARTH_BANDS],
                         fwhm_nm=[b.fwhm_nm for b in SPECTRAL_EARTH_BANDS],
                         units="reflectance x 10000", nodata=ENMAP_NODATA, where=where)


def _check_bands(path: Path, where: str) -> None:
    """A patch file has 202 bands, and any wavelengths it declares are SpectralEarth's."""
    import rasterio

    from geofm_lib.data.sources.base import _described_wavelength

    with rasterio.open(path) as src:
        count, descriptions = src.count, list(src.descriptions)
    if count != len(SPECTRAL_EARTH_BANDS):
        raise ConfigError(f"{where}: {path.name} has {count} bands; SpectralEarth's patches have "
                          f"{len(SPECTRAL_EARTH_BANDS)} (EnMAP without its water-vapour bands). "
                          f"For full 224-band EnMAP files use the geotiff or torchgeo "
                          f"(HySpecNet11k) reader")
    for d, band in zip(descriptions, SPECTRAL_EARTH_BANDS, strict=True):
        nm = _described_wavelength(d) if d else None
        if nm is not None and abs(nm - band.center_nm) > 5:
            raise ConfigError(f"{where}: {path.name} describes a band as {d!r}, where "
                              f"SpectralEarth's band order has {band.center_nm:.1f} nm; the file "
                              f"is not in SpectralEarth's band order")


class SpectralEarthSource(AnnotatedSource):
    """``reader: spectral_earth``: the pretraining patches (a dataset without labels, e.g.
    ``spectral_earth``) or EnMAP-CORINE (a dataset with CORINE labels, ``enmap_corine``)."""

    def __init__(self, dataset: str, spec, cfg: Config):
        reader_options(spec, dataset)
        where = f"sources.{dataset}"
        vocab = cfg.dataset_info(dataset).labels
        root = open_root(dataset, spec, "enmap/ (and corine/ for EnMAP-CORINE)")
        images = root / "enmap"
        if not images.is_dir():
            raise ConfigError(f"{where}: no enmap/ folder under {root}; SpectralEarth's release "
                              f"keeps its patches in enmap/")
        problems = Problems(spec.on_bad, where)
        report = {}
        if vocab:
            items, found, report = self._corine(root, images, vocab, problems, where)
        else:
            items, found, report = self._pretraining(images, where)
        if items:
            _check_bands(items[0].images[0], where)
        super().__init__(cfg, dataset, spec, items, vocab, spectral_earth_bands(dataset, where),
                         "spectral_earth", problems, found, report)
        if "min_mask_share" not in spec.options:
            self.opts["min_mask_share"] = ANY_PIXEL
            self._report["thresholds"] = self.opts

    @staticmethod
    def _pretraining(images: Path, where: str):
        locations = sorted(p for p in images.iterdir() if p.is_dir())
        if not locations:
            raise ConfigError(f"{where}: enmap/ holds no location folders (enmap/<location>/"
                              f"<acquisition>.tif); EnMAP-CORINE's flat enmap/<sample>.tif "
                              f"layout needs the dataset enmap_corine")
        items, later, found = [], 0, 0
        for loc in locations:
            tifs = sorted(p for p in loc.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
            found += len(tifs)
            if tifs:
                items.append(Item((tifs[0],), group=loc.name, extra={"location": loc.name,
                                                     "acquisitions": len(tifs)}))
                later += len(tifs) - 1
        return items, found, {"locations": len(locations),
                              "acquisitions_beyond_the_first": later}

    def _corine(self, root: Path, images: Path, vocab, problems: Problems, where: str):
        masks = root / "corine"
        if not masks.is_dir():
            raise ConfigError(f"{where}: no corine/ folder under {root}; EnMAP-CORINE's labels "
                              f"are CORINE rasters in corine/<sample>.tif")
        if tuple(vocab) != BIGEARTHNET_43:
            raise ConfigError(f"{where}: the CORINE codes map to the 43-class nomenclature; "
                              f"this dataset's labels are another list")
        ids = {code: vocab[i] for i, code in enumerate(CLC_CODES)}
        ids.update({code: None for code in CLC_NOT_LABELS})
        split_of = {}
        split_dir = root / "splits" / "enmap_corine"
        for split, as_split in (("train", "train"), ("val", "val"), ("test", "val")):
            f = split_dir / f"{split}.txt"
            if f.is_file():
                for line in f.read_text().splitlines():
                    if line.strip():
                        split_of[Path(line.strip()).name] = as_split
        files = sorted(p for p in images.iterdir() if p.suffix.lower() in (".tif", ".tiff"))
        items, unlisted = [], 0
        for image in files:
            if split_of and image.name not in split_of:
                unlisted += 1
                continue
            mask = masks / image.name
            if not mask.is_file():
                problems.bad("CORINE rasters missing", f"{image.name} has no corine/{mask.name}",
                             "download the corine/ folder of the release")
                continue
            if image_size(mask) != image_size(image):
                problems.bad("CORINE rasters of another size", f"corine/{mask.name} is "
                             f"{image_size(mask)[::-1]} px, its image {image_size(image)[::-1]}",
                             "masks must have their image's size")
                continue
            items.append(Item((image,), split=split_of.get(image.name), class_mask=mask,
                              class_ids=ids, extra={"image_id": image.stem}))
        if unlisted:
            problems.known("not in the train/val/test list(s)", unlisted)
        return items, len(files), {"split_lists": bool(split_of)}

    def scene(self, dataset: str, index: int):
        item = self.items[index]
        if item.class_mask is not None:
            values = np.unique(self._mask(item.class_mask, image_size(item.images[0]), item))
            unknown = sorted(int(v) for v in values if int(v) not in item.class_ids)
            if unknown:
                raise DataError(f"{dataset}: corine/{item.class_mask.name} holds values "
                                f"{unknown[:5]}, which are no CORINE level-3 codes (111-523; 0 "
                                f"no data); check the file, or set on_bad: skip")
        return super().scene(dataset, index)
