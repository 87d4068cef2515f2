"""The readable forms of a ``metrics.json``: the table ``finalize`` and ``score`` print, the lines the
report and the dashboard note reuse. Pure functions of the metrics dict."""

from __future__ import annotations

from typing import Any

from anklealign.report import twin_sentence
from search.run.metrics import METRICS

__all__ = ["format_table", "metric_rows", "gain_lines", "trust_lines", "rank_sentence", "chosen_sentence",
           "summary_lines"]


def _cell(entry: Any, *, std: bool = False) -> str:
    if not isinstance(entry, dict) or entry.get("mean") is None:
        return "-"
    text = f"{entry['mean']:.3f}"
    if std and entry.get("std") is not None:
        text += f"±{entry['std']:.3f}"
    if entry.get("ci95"):
        text += f" [{entry['ci95'][0]:.3f}, {entry['ci95'][1]:.3f}]"
    return text


_OBJECTIVE_WORDS = {"best_epoch": "best-epoch", "last_epoch": "last-epoch", "last_mean": "last-5-epochs mean"}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def _cv_line(m: dict[str, Any]) -> str:
    cv = m["cv"]
    chosen = _OBJECTIVE_WORDS.get(cv.get("objective", "best_epoch"), cv.get("objective"))
    line = (f"cross-validated {cv['metric']} ({cv.get('folds')} folds): {_fmt(cv['value'])}, the {chosen} value the "
            f"study optimised (best epoch {cv.get('best_epoch')}: {_fmt(cv.get('best_epoch_value'))}; last epoch "
            f"{cv.get('epochs_run')}: {_fmt(cv.get('last_epoch_value'))}; last-5 mean "
            f"{_fmt(cv.get('last_mean_value'))})")
    bbc = (m.get("selection") or {}).get("choice_estimate") or cv.get("bias_corrected") or {}
    if bbc.get("estimate") is not None:
        ci = bbc.get("ci95") or [None, None]
        line += (f"\nestimated score of the search's choice (its selection procedure re-run on {bbc['resamples']} "
                 f"resamples of the training images, scored on the images each left out; {bbc['configs']} trials): "
                 f"{bbc['estimate']:.4f} [{_fmt(ci[0])}, {_fmt(ci[1])}]; the best trial's own out-of-fold score "
                 f"{bbc['raw']:.4f} is {bbc['bias']:+.4f} above it (selection optimism)")
    return line


def gain_lines(m: dict[str, Any]) -> list[str]:
    """The search-gain lines: the exported model against each retrained preset and random, and the warnings."""
    gain = m.get("search_gain")
    if not gain:
        return []
    parts = [f"{name} {v['difference']:+.3f}" + (f" [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]" if v.get("ci95")
                                                 else "")
             for name, v in gain["vs"].items()]
    lines = [f"search gain ({gain['metric']}, exported model minus each baseline, 95 % paired interval): "
             + "; ".join(parts)]
    lines += [f"WARNING: {w}" for w in gain.get("warnings", [])]
    lines += [f"note: {n}" for n in gain.get("notes", [])]
    return lines


def trust_lines(m: dict[str, Any]) -> list[str]:
    """Calibration, label shift, vote-based accuracy and per-class recall, one or two lines each."""
    lines = []
    cal = m.get("calibration")
    if cal and cal.get("scored"):
        b, a = cal["scored"]["before"], cal["scored"]["after"]
        lines.append(f"calibration: temperature {cal['temperature']:.3f} fitted on out-of-fold predictions; on these "
                     f"images NLL {b['nll']:.3f} -> {a['nll']:.3f}, Brier {b['brier']:.3f} -> {a['brier']:.3f}, "
                     f"ECE (equal-mass) {b['ece']:.3f} -> {a['ece']:.3f}; calibrated to "
                     + cal.get("calibrated_to", "the training labels"))
    if cal and cal.get("warning"):
        lines.append(f"WARNING: calibration: {cal['warning']}")
    shift = m.get("label_shift")
    if shift and shift.get("skipped"):
        lines.append(f"class prior: not estimated ({shift['skipped']})")
    elif shift:
        est, ci, true = shift["estimated_prior"], shift["estimated_prior_ci95"], shift["true_prior"]
        parts = [f"{c} {est[c]:.2f}" + (f" [{ci[c][0]:.2f}, {ci[c][1]:.2f}]" if ci.get(c) else "")
                 + f" (true {true[c]:.2f}, train {shift['train_prior'][c]:.2f})" for c in est]
        how = "BBSE" if "black-box" in shift.get("method", "") else "EM"
        lines.append(f"class prior estimated from the unlabelled images ({how}): " + "; ".join(parts))
        adj = shift["prior_adjusted"]
        lines.append("PRIOR-ADJUSTED (not the model's score; probabilities moved to the estimated prior): " + ", ".join(
            f"{n.replace('_', ' ')} {_cell(adj.get(n))}" for n in METRICS))
        if shift.get("warning"):
            lines.append(f"WARNING: {shift['warning']}")
    votes = m.get("votes")
    if votes:
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"against the vote majority: accuracy {fmt(votes['accuracy_without_ties'])} on "
                     f"{votes['images_without_tie']} images without a tie, {fmt(votes['accuracy_on_ties'])} on "
                     f"{votes['tied_images']} tied ones (any tied class counts)")
    per = (m.get("per_class") or {}).get("classes")
    if per:
        def one(c: str, v: dict[str, Any]) -> str:
            rec = v.get("recall")
            pre = v.get("precision")
            r = _cell(rec) if rec else "- (no image)"
            p = _cell(pre) if pre else "- (never predicted)"
            return f"{c} (n={v['support']}): recall {r}, precision {p}"
        lines.append("per class: " + "; ".join(one(c, v) for c, v in per.items()))
    return lines


def metric_rows(m: dict[str, Any]) -> list[str]:
    """The table of the model's seeds, the exported ensemble and every baseline, one metric per column."""
    rows = [(f"model, mean of {len(m['seeds'])} seeds", m["test"], True),
            ("ensemble (the exported model)", m["ensemble"], False)]
    for name, b in m["baselines"].items():
        if "skipped" in b:
            cv = b.get("cv_value")
            label = f"{name}: CV {cv:.3f}, not retrained" if cv is not None else f"{name}: skipped ({b['skipped']})"
            rows.append((label, {}, False))
            continue
        label = {"train_majority": f"always {b.get('predicts')} (train majority)",
                 "test_majority_oracle": f"always {b.get('predicts')} (ORACLE)",
                 "stratified_random": "random, training frequencies",
                 "default": f"default, no search ({len(m['seeds'])} seeds)"}.get(
                     name, f"{name} ({len(m['seeds'])} seeds)")
        rows.append((label, b, b.get("kind") == "preset"))
    lines = [(f"{'':<34}" + "".join(f"{n.replace('_', ' '):<30}" for n in METRICS)).rstrip()]
    for label, entry, std in rows:
        lines.append((f"{label:<34}" + "".join(f"{_cell(entry.get(n), std=std):<30}" for n in METRICS)).rstrip())
    return lines


def _rank(r: dict[str, Any]) -> str:
    ci = r.get("rank_ci95")
    return f"{r.get('rank')}" + (f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else "") + f" of {r.get('of')}"


def rank_sentence(humans: dict[str, Any]) -> str:
    """The exported model's rank among the annotators, with its interval and the ranks of answers that ignore
    the image, so that a rank a constant answer also reaches is never quoted alone."""
    ranks = humans.get("model_rank") or {}
    model = ranks.get("ensemble")
    if not model:
        return "no model ranked"
    others = {n: r for n, r in ranks.items() if r.get("kind") in ("constant", "random")}
    text = (f"the exported model ranks {_rank(model)} (1 = no annotator beats it; each compared on that annotator's "
            "images and reference; 95 % interval over resampled images)")
    if others:
        text += "; answers that ignore the image rank " + ", ".join(f"{n} {_rank(r)}" for n, r in others.items())
        if any(r["rank"] <= model["rank"] for r in others.values()):
            text += (": a constant answer ranks as well as the model, so this rank says nothing about the model "
                     "(the test set is dominated by one class)")
    return text


def format_table(m: dict[str, Any]) -> str:
    """The readable summary ``finalize`` prints: model vs baselines vs humans, with 95 % intervals."""
    data = m["data"]
    absent = m.get("classes_absent") or []
    k = len(m["classes"])
    lines = [f"data: {data['note']} — {data['source']}", *filter(None, [twin_sentence(data)]),
             f"study {m['study']}, trial {m['trial']}: {_cv_line(m)}",
             f"retrained on {data['train_images']} images, {len(m['seeds'])} seeds: {m.get('epochs_reason', '')}",
             *([f"exported: {m['exported']}"] if m.get("exported") else []),
             f"test set: {m['test_set']['images']} images in {m['test_set'].get('groups', '?')} duplicate groups; "
             f"macro-F1 averages all {k} classes" + (
                 f"; {', '.join(absent)} has no test image (F1 0, no recall), so macro-F1 here is at most "
                 f"{(k - len(absent)) / k:.3f}" if absent else ""),
             "mean [95 % bootstrap interval over duplicate groups]; ± = std over seeds", ""]
    reads = (m.get("test_reads") or {}).get("count")
    if isinstance(reads, int) and reads > 1:
        lines.insert(1, f"WARNING: the test labels have been read {reads} times ({m['test_reads']['log']}); "
                        "only the first read is untouched by choices made after seeing a test score")
    lines += metric_rows(m)
    lines += ["", *gain_lines(m)] if m.get("search_gain") else []
    lines += ["", *trust_lines(m)] if trust_lines(m) else []
    humans = m["annotators"]
    if humans.get("available"):
        acc = humans["accuracy"]
        lines.append(f"\nhuman annotators (n={humans['n_annotators']}, each against the majority of the others): "
                     f"accuracy mean {acc['mean']:.3f}, min {acc['min']:.3f}, max {acc['max']:.3f}; "
                     + rank_sentence(humans))
    else:
        lines.append(f"\nhuman annotators: {humans.get('reason')}")
    onnx = m.get("onnx") or {}
    if onnx.get("max_abs_diff") is not None:
        lines.append(f"ONNX check: max |p_onnx - p_torch| = {onnx['max_abs_diff']:.1e} (tolerance "
                     f"{onnx['tolerance']:.0e}) on {onnx['check_images']} images")
    if isinstance(reads, int):
        lines.append(f"test-label reads of this study: {reads} ({m['test_reads']['log']})")
    return "\n".join(lines)


def chosen_sentence(m: dict[str, Any]) -> str:
    """Which trial was exported and by which rule, in one sentence (the console, the report's summary, the card)."""
    sel = m.get("selection") or {}
    vs = sel.get("versus_default") or {}
    trial, others = m.get("trial"), vs.get("candidates")
    if vs.get("kept") == "default" and vs.get("winner_trial") == vs.get("default_trial"):
        text = f"trial {trial}, the default configuration: it has the best cross-validated value of {others + 1} trials"
    elif vs.get("kept") == "default":
        text = (f"trial {trial}, the default configuration: no trial beat it out of fold by more than the best of "
                f"{others} trials of equal skill would by chance (best {vs['difference']:+.3f}, p = "
                f"{vs['p_value']:.2f})")
    elif vs.get("kept") in ("winner", "other"):
        text = (f"trial {trial}: it beat the default configuration (trial {vs['default_trial']}) out of fold by more "
                f"than the best of {others} trials of equal skill would by chance (p = {vs['p_value']:.3f})")
    else:
        text = f"trial {trial}, the best cross-validated value"
    members = sel.get("trials") or [trial]
    if len(members) > 1:
        weights = sel.get("weights") or []
        how = ("greedy ensemble selection on out-of-fold NLL" if sel.get("greedy_nll") else
               "the best out-of-fold score of the averaged trials")
        text += (f"; averaged with trial(s) {', '.join(str(t) for t in members[1:])} by {how}"
                 + (f" (weights {'/'.join(f'{w:.2f}' for w in weights)})" if weights and sel.get("greedy_nll") else ""))
    return text + f"; x {len(m.get('seeds') or [])} seed(s)"


def summary_lines(m: dict[str, Any], *, run_dir: Any = None) -> list[str]:
    """The few lines a run ends with: what was exported and why, its test score against the references, where
    the files are. The full table goes to ``best/summary.txt``."""
    metric = (m.get("cv") or {}).get("metric", "macro_f1")
    ens = m["ensemble"]
    data = m["data"]
    words = metric.replace("_", " ").replace("macro f1", "macro-F1")
    lines = [f"exported: {chosen_sentence(m)}",
             f"test set ({m['test_set']['images']} images, {data['note']}): {words} {_cell(ens.get(metric))}; "
             f"accuracy {_cell(ens.get('accuracy'))}"]
    gain = m.get("search_gain") or {}
    vs = gain.get("vs") or {}
    parts = []
    fmt = lambda v: f"{v['difference']:+.3f}" + (f" [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}]"  # noqa: E731
                                                 if v.get("ci95") else "")
    if "default" in vs:
        parts.append(f"default configuration {fmt(vs['default'])}")
    nets = {n: v for n, v in vs.items() if n not in ("default", "stratified_random")}
    if nets:
        best = min(nets, key=lambda n: nets[n]["difference"])
        word = "seed net" if data.get("kind") == "anklealign" else "reference net"
        parts.append(f"best {word} ({best}) {fmt(nets[best])}")
    if "stratified_random" in vs:
        parts.append(f"random guessing {fmt(vs['stratified_random'])}")
    if parts:
        lines.append("  exported minus: " + "; ".join(parts) + " (95 % intervals)")
    lines += [f"WARNING: {w}" for w in (gain.get("warnings") or [])[:2]]
    if run_dir is not None:
        best_dir = f"{run_dir}/best"
        lines += [f"model: {best_dir}/model.pt (and model.onnx, model_card.json)",
                  f"full table (calibration, label shift, per class, annotators): {best_dir}/summary.txt"]
    return lines
