"""Models: names (``names.py``, no torch), OpenCLIP's factory with geofm's small configs
(``factory.py``), model input and augmentation (``inputs.py``), band adapters (``adapters.py``),
device and precision (``devices.py``). No face: ``config`` imports ``models.names`` without
loading torch.
"""
