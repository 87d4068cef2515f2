"""From a zip or folder to a labelled, de-duplicated dataset (the scan), one module per step.

In the order :func:`anklealign.ingest.scan.scan` runs them:

* :mod:`~anklealign.ingest.source`: the bytes, from a folder or a zip read in place.
* :mod:`~anklealign.ingest.layout`: the dataset's root found by content, every file given a role.
* :mod:`~anklealign.ingest.participants`: each participant image's own labels, from its folder's
  Label Studio export (:mod:`~anklealign.ingest.labelstudio`) matched by the file-name rules
  (:mod:`~anklealign.ingest.filenames`), else from a class-named sub-folder
  (:mod:`~anklealign.ingest.labels`: the class vocabulary).
* :mod:`~anklealign.ingest.consensus`: the test set: the list, each annotator's votes, the tie rule.
* :mod:`~anklealign.ingest.decode`: every image decoded once, by content (hashes and arrays).
* :mod:`~anklealign.ingest.dedup`: exact, near and mirrored duplicate groups.
* :mod:`~anklealign.ingest.sides`: the train and test sides: leakage removed, group votes.
* :mod:`~anklealign.ingest.cache`: the scan and the decoded tensors kept on disk.

``QUIRKS.md`` (next to this file) names the function that handles each quirk of the real archive
(``docs/DATA.md``). Nothing here imports :mod:`anklealign.twin`.
"""
