"""AnkleAlign data: from a zip or folder to labelled, de-duplicated, decoded tensors.

Two halves sit under this API: :mod:`anklealign.ingest` reads a source into a labelled,
de-duplicated dataset, and :mod:`anklealign.twin` writes the synthetic twin of the real archive
(``docs/DATA.md`` describes the archive). Other packages import the names below from ``anklealign``
itself (and the report helpers from :mod:`anklealign.report`); the modules of the two halves are
internal.

Example::

    import anklealign
    ds = anklealign.load("anklealign.zip", image_size=64)   # None: the synthetic twin
    ds.train.images.shape, ds.report.to_dict()["test"]
"""

from __future__ import annotations

from anklealign.dataset import Dataset, Split, decode_image, inspect, known_copies, load
from anklealign.errors import DataError
from anklealign.ingest.labels import CLASSES
from anklealign.report import QualityReport
from anklealign.twin.generator import SynthManifest, synth

__all__ = ["CLASSES", "DataError", "Dataset", "QualityReport", "Split", "SynthManifest", "decode_image",
           "inspect", "load", "synth", "known_copies"]
