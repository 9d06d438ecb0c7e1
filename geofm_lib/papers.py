"""The seeds' published result tables, so that notebooks can put our numbers beside them.
"""

from __future__ import annotations

# --- seed 000 result tables: R@1, R@5, R@10 in %, None where the paper prints "-" -------------
PAPER_RESULTS: dict[str, dict[str, tuple[float | None, float | None, float | None]]] = {
    # Table 2: one CLIP trained on all eight datasets compiled together.
    "compiled": {
        "bigearthnet_s2": (0.4, 1.6, 2.4), "bigearthnet_s1": (0.2, 5.2, 14.4),
        "agriculture_vision": (17.0, 64.0, None), "seadronessee": (1.9, 100.0, None),
        "xview": (1.4, 2.2, 5.6), "qfabric": (1.2, 2.4, 4.8),
        "houston_harvey": (96.0, 100.0, None), "mafat": (5.6, 32.6, 63.0),
    },
    # Table 3: one CLIP per resolution group (A, B, C). BigEarthNet-S1 is not reported.
    "groups": {
        "bigearthnet_s2": (4.4, 35.4, 51.6), "agriculture_vision": (60.0, 93.0, None),
        "seadronessee": (61.4, 100.0, None), "xview": (57.2, 60.4, 70.6),
        "qfabric": (55.8, 89.8, 98.6), "houston_harvey": (90.1, 100.0, None),
        "mafat": (22.0, 61.0, 82.2),
    },
    # Table 4: group C with sensor and resolution in the captions.
    "group_c_metadata": {
        "xview": (1.8, 83.8, 89.0), "qfabric": (28.2, 89.0, 99.6),
        "houston_harvey": (10.0, 100.0, None), "mafat": (7.0, 41.8, 93.4),
    },
}


PAPER_TABLE_NAMES = {"compiled": "Table 2 (compiled dataset)",
                     "groups": "Table 3 (one model per resolution group)",
                     "group_c_metadata": "Table 4 (group C, sensor and resolution in captions)"}


def paper_table_for(group: str, caption_metadata: bool) -> tuple[str, dict]:
    """The seed 000 table that matches a run: (its title, {dataset: (R@1, R@5, R@10)}).

    Group ``all`` is Table 2; groups A, B and C are Table 3; group C with metadata captions is
    Table 4. Other combinations (e.g. group A with metadata, or a custom group: another mix of
    data than any of the paper's models saw) were not run in the paper and get an empty table.
    """
    if group not in ("A", "B", "C", "all"):
        return f"no paper table (group {group}: the paper trained one model per group A, B, " \
               f"C and one on all)", {}
    if caption_metadata:
        if group == "C":
            return PAPER_TABLE_NAMES["group_c_metadata"], PAPER_RESULTS["group_c_metadata"]
        return "no paper table (the paper added metadata to group C only)", {}
    key = "compiled" if group == "all" else "groups"
    return PAPER_TABLE_NAMES[key], PAPER_RESULTS[key]


# --- seed 002: frozen DOFA features on BigEarthNet Sentinel-1, probes on the test split ----------
# (F2 macro %, F2 micro %, Hamming loss, precision macro %, precision micro %)
SEED002_RESULTS: dict[str, dict[str, tuple[float, float, float, float | None, float | None]]] = {
    "19 classes (Table 1)": {"random_forest": (21.4, 35.8, 0.123, 52, 72),
                             "linear": (22.9, 35.3, 0.124, 49, 70),
                             "mlp": (34.5, 47.8, 0.113, 58, 71)},
    "43 classes (Table 2)": {"random_forest": (9.46, 33.73, 0.056, 24, 71),
                             "linear": (12.63, 36.54, 0.057, 28, 66),
                             "mlp": (15.45, 44.46, 0.052, 38, 71)},
}


# Seed 003, "aug set 2" tables: fine-tuned on 1,024 labelled samples, multi-label scene
# classification, ResNet50, printed as "accuracy" (None: not reported). SEN12MS and BigEarthNet.
SEED003_RESULTS = {
    "SEN12MS": {"supervised (1024)": (0.4003, 0.6108, 0.5856),
                "sensor-based augmentation": (None, 0.6277, 0.6697),
                "all fusion": (None, 0.6251, 0.5957),
                "partial fusion": (0.4729, 0.5812, 0.6072)},
    "BigEarthNet": {"supervised (1024)": (0.4008, 0.5496, 0.5423),
                    "partial fusion": (0.4279, 0.5351, 0.5352)},
}


# Seed 001's forest segmentation (SSL4EO-EU-Forests: Sentinel-2 images with HRL tree-cover
# masks, about 16,000 places, four seasons), fine-tuned for 100 epochs: (decoder, encoder) ->
# pretraining weights -> (overall accuracy %, mean IoU %). Different data from the demo's.
SEED001_SEGMENTATION = {
    ("UNet", "ResNet-18"): {"Random": (85.58, 75.19), "MoCo": (88.03, 78.61),
                            "DINO": (88.72, 79.72)},
    ("UNet", "ResNet-50"): {"Random": (85.69, 74.97), "MoCo": (88.68, 79.66),
                            "DINO": (88.18, 78.85)},
    ("DeepLabV3+", "ResNet-18"): {"Random": (84.89, 73.95), "MoCo": (87.37, 77.58),
                                  "DINO": (87.82, 78.29)},
    ("DeepLabV3+", "ResNet-50"): {"Random": (84.73, 73.65), "MoCo": (88.14, 78.80),
                                  "DINO": (87.59, 77.92)},
    ("UpConv", "ViT-S"): {"Random": (86.35, 76.03), "MoCo": (87.38, 77.59),
                          "DINO": (88.57, 77.49)},
}


# Seed 001's SpectralEarth table: EnMAP-CORINE multi-label F1 (%) of spectral ResNet-50 / ViT-S
# encoders under its three protocols (trainable weights: 0, >20 M, the 56 K of the spectral
# adapter), by pretraining (None: not reported; MAE needs a ViT). Different data and scale.
SEED001_SPECTRAL = {
    ("frozen encoder", "random init"): (70.53, 70.42),
    ("frozen encoder", "MoCo-v2"): (73.97, 73.60),
    ("frozen encoder", "DINO"): (76.64, 75.06),
    ("frozen encoder", "MAE"): (None, 72.72),
    ("full fine-tuning", "random init"): (78.31, 77.78),
    ("full fine-tuning", "MoCo-v2"): (78.57, 78.40),
    ("full fine-tuning", "DINO"): (77.98, 78.34),
    ("full fine-tuning", "MAE"): (None, 78.66),
    ("fine-tuned spectral adapter", "MoCo-v2"): (76.27, 76.12),
    ("fine-tuned spectral adapter", "DINO"): (78.43, 77.95),
    ("fine-tuned spectral adapter", "MAE"): (None, 76.80),
}
