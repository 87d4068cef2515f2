"""The synthetic twin of the AnkleAlign archive: the real archive's layout, JSON and quirks, drawn pictures.

* :mod:`~anklealign.twin.generator`: :func:`~anklealign.twin.generator.synth` and its ground truth,
  :class:`~anklealign.twin.generator.SynthManifest` (both public as ``anklealign.synth`` and
  ``anklealign.SynthManifest``).
* :mod:`~anklealign.twin.difficulty`: one number in [0, 1] that sets signal, nuisance and label noise.
* :mod:`~anklealign.twin.plan`: the whole archive as data (folders, files, tasks, every quirk
  planted), from the types and random choices of :mod:`~anklealign.twin.planner` and the names of
  :mod:`~anklealign.twin.naming`; :mod:`~anklealign.twin.annotators`: the consensus annotators' votes.
* :mod:`~anklealign.twin.draw`: the procedural rear view of a leg and heel;
  :mod:`~anklealign.twin.images`: its pixels and file bytes.
* :mod:`~anklealign.twin.archive`: every file of the twin (with :mod:`~anklealign.twin.labelstudio_export`),
  written as a folder or a zip; :mod:`~anklealign.twin.manifest`: the ground truth of what was written.
* :mod:`~anklealign.twin.ceiling` and :mod:`~anklealign.twin.summary`: the best possible score,
  label noise and chance of each split; :mod:`~anklealign.twin.eval_draw`: the evaluation draw and
  the difficulty contact sheet.

The twin may use :mod:`anklealign.ingest` (the marker's format); the ingest never uses the twin.
"""
