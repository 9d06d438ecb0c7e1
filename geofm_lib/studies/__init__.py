"""The experiments layer: each protocol of the seed papers as one library function.

A notebook calls one function per step and shows what it returns; the function takes the config
and what the stage before wrote and returns plain results and, at the end, the stage's typed
record (:mod:`geofm_lib.records`). Between ``encoders`` (what is compared) and ``report`` (how it
is shown) in the import layers.

- :mod:`~geofm_lib.studies.segmentation`: seed 001's segmentation comparison (notebook 08).
"""
