"""AnkleAlign data: from a zip or folder to labelled, de-duplicated, decoded tensors.

Example::

    import anklealign
    ds = anklealign.load("anklealign.zip", image_size=64)   # None: the synthetic twin
    ds.train.images.shape, ds.report.to_dict()["test"]
"""

from __future__ import annotations

from anklealign._labels import CLASSES
from anklealign.dataset import Dataset, Split, decode_image, inspect, load
from anklealign.errors import DataError
from anklealign.report import QualityReport
from anklealign.synth import SynthManifest, synth

__all__ = ["CLASSES", "DataError", "Dataset", "QualityReport", "Split", "SynthManifest", "decode_image",
           "inspect", "load", "synth"]
