"""Models: names (``names.py``, no torch), OpenCLIP's factory with geofm's small configs
(``factory.py``), model input (``inputs.py``), band adapters (``adapters.py``), device and
precision (``devices.py``).
"""
