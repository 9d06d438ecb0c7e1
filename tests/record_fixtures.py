"""Small typed records for tests of the pages: every required field filled with a neutral value,
the fields a test is about given by the test."""

from geofm_lib import records


def segmentation(**fields) -> records.SegmentationRecord:
    base = {"target": "trees", "decoder": "unet", "decoders": ["unet"], "input": "s2",
            "protocols": ["frozen"], "classes": ["not tree", "tree"], "backbones": {},
            "labelled": [64], "epochs": 1, "n_test": 10, "few_labels": 64, "protocol": "frozen",
            "mean_iou": {}, "mean_iou_ci": {}, "minus_random_init": {},
            "minus_random_init_ci": {}, "at_floor": {}, "table": [], "differences": [],
            "details": [], "density": [], "history": {},
            "floor": {"name": "majority class", "what": "every pixel 'not tree'",
                      "mean_iou": 34.7, "overall_accuracy": 69.4}}
    return records.SegmentationRecord.of({**base, **fields})


def segmentation_row(encoder: str, mean_iou: float, ci: list[float], **fields) -> dict:
    return {"protocol": "frozen", "decoder": "unet", "encoder": encoder, "labelled": 64,
            "mean_iou": mean_iou, "overall_accuracy": 80.0, "boundary_f1": 10.0,
            "ci": {"mean_iou": ci, **fields.pop("more_ci", {})}, "seconds": 1.0, "iou": {},
            **fields}


def difference(encoder, protocol, n, d, ci, decoder="unet", baseline="random init") -> dict:
    return {"encoder": encoder, "protocol": protocol, "labelled": n, "decoder": decoder,
            "baseline": baseline, "minus_random_init": d, "ci": ci}


def ssl(**fields) -> records.SslRecord:
    base = {"ssl_method": "moco", "ssl_mode": "sensor", "ssl_patches": None,
            "headline_input": "s1/s2", "places_train": 100, "places_val": 20,
            "places_pretrained": 100, "final_loss": 1.0, "embedding_std": 0.1,
            "collapsed": False, "table": []}
    return records.SslRecord.of({**base, **fields})


def protocol_row(protocol, init, score, lo, hi, **fields) -> records.ProtocolRow:
    return records.ProtocolRow._from_mapping({
        "protocol": protocol, "init": init, "input": "s2", "metric": "F1 micro",
        "n_labelled": 64, "n_test": 20, "score": score, "ci": [lo, hi], "f2_micro": score,
        "recipe": None, "trainable": 0, "steps": 0 if "frozen" in protocol else 40, **fields},
        "protocol row")
