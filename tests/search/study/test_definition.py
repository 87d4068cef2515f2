"""Study definitions: the default file, overrides, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from search.study.definition import StudyDefError, load_study_def


def test_default_study_loads_with_documented_defaults() -> None:
    d = load_study_def("anklealign")
    assert d.name == ""  # named after its data when it runs (search.study.definition.name_from_data)
    assert d.study.objective == "last_mean" and d.training.deterministic is False
    assert d.cv.folds == 3 and d.training.max_epochs == 30 and d.study.trials == 30
    assert d.study.metric == "macro_f1"
    nets = ("baseline", "net0", "net1", "net2", "net3", "net4", "net5", "net6")
    assert d.study.enqueue_presets == ("default", *nets) and d.final.baseline_presets == ("default", *nets)
    assert d.final.seeds == 3 and d.final.top_k == 1
    assert d.pruner.name == "guarded" and (d.pruner.min_share, d.pruner.band) == (0.4, 0.05)
    # the file and the dataclass defaults say the same (a definition without the file behaves alike)
    from search.study.definition import study_def_from_dict

    bare = study_def_from_dict({})
    assert (bare.study, bare.training, bare.pruner, bare.final) == (d.study, d.training, d.pruner, d.final)


def test_overrides_apply_and_change_the_hash() -> None:
    base = load_study_def("anklealign")
    d = load_study_def("anklealign", ["cv.folds=5", "pruner.name=hyperband", "space.image_size=[64]"])
    assert d.cv.folds == 5 and d.pruner.name == "hyperband" and d.space["image_size"] == [64]
    assert d.definition_hash() != base.definition_hash()
    # run-only keys do not change what a trial computes: a worker with another --trials may join
    assert load_study_def("anklealign", ["study.trials=7"]).definition_hash() == base.definition_hash()


def test_round_trip_through_written_toml(tmp_path: Path) -> None:
    d = load_study_def("anklealign", ["cv.folds=4"])
    p = tmp_path / "s.toml"
    p.write_text(d.to_toml())
    assert load_study_def(str(p)) == d


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["cv.nofolds=3"], "cv.nofolds"),
        (["nosection.key=1"], "nosection"),
        (["cv.folds=\"three\""], "cv.folds"),
        (["cv.folds=1"], "cv.folds"),
        (["training.max_epochs=0"], "training.max_epochs"),
        (["pruner.name=bogus"], "pruner.name"),
        (["sampler.name=bogus"], "sampler.name"),
        (["study.enqueue_presets=[\"net9\"]"], "net9"),
        (["study.metric=auc"], "study.metric"),
        (["sampler.multivariate=3"], "sampler.multivariate"),
        (["space.no_such_param=[1]"], "no_such_param"),
        (["folds=3"], "SECTION.KEY=VALUE"),
    ],
)
def test_bad_definitions_name_the_key(overrides: list[str], needle: str) -> None:
    with pytest.raises(StudyDefError, match=needle):
        load_study_def("anklealign", overrides)


def test_syntax_error_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[study\nname = 1")
    with pytest.raises(StudyDefError, match="not valid TOML"):
        load_study_def(str(bad))
    with pytest.raises(StudyDefError, match="no study definition named"):
        load_study_def("does-not-exist")
    with pytest.raises(StudyDefError, match="not found"):
        load_study_def(str(tmp_path / "missing.toml"))
