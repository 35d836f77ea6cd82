"""The CID sweep's evaluation people (issue 26 item 4): who the models are tested on, who the CID
bandwidth is chosen on, and the scores read off them.

Issue 16's test set gave every test person exactly half smiling images and drew them all from the
general population, so a model that learned the training set's shortcut ("wears glasses" or "looks
like one of the over-represented people" -> smiling) lost on every person alike, and a model that
collapsed to one answer still scored 0.5 on each. The design here (`designed_people`) gives

  - each person a label mix cycled from `smile_mix` (e.g. 0.25 and 0.75: mostly not smiling or
    mostly smiling), so that a model answering from the face rather than the expression gets the
    minority images of every person wrong, and a collapsed model scores 0.25 on half of them;
  - look-alikes of the over-represented ("dominant") people (`lookalikes`): a dominant person's
    face parameters blended with a fresh person's (weight `blend` on the fresh one; the glasses
    habit comes with the dominant face), with the fresh person's index, so that their images are
    drawn afresh. With the people of the general population who have the glasses habit, they are
    the people the bias touches ("touched"): the shortcut calls them smiling when they are not.

`smile_mix=[0.5]` with no look-alikes is issue 16's test set, image for image.

The same builder makes the calibration people the CID bandwidth factor is chosen on (validation
images of people in neither the training pool nor the test set); `choose_factor` picks the factor
whose model has the best worst-10 % identity accuracy on them (ties: accuracy).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import SynthfaceError
from ..evaluation.identity_robustness import identity_robustness
from .cid_data import render_images

OVERALL_KEYS = ("accuracy", "identity_accuracy_mean", "identity_accuracy_std", "worst_5pct_identity_accuracy",
                "worst_10pct_identity_accuracy", "worst_group_accuracy", "equal_opportunity_gap")


def label_draws(world, people: dict, n_draws: int) -> dict:
    """Per-image labels of images 0..n_draws-1 of every person, without rendering (the labels
    are the renderer's nuisance draws)."""
    from ..world import take
    from ..world.dataset import image_labels
    rows = np.repeat(np.arange(len(people["index"])), n_draws)
    j = np.tile(np.arange(n_draws), len(people["index"]))
    lab = image_labels(world, take(people, rows), j)
    return {k: v.reshape(-1, n_draws) for k, v in lab.items()}


def lookalikes(world, dominant: dict, first: int, n: int, blend: float) -> dict:
    """n look-alikes of the dominant people (cycled): each one's float face parameters are
    (1 - blend) x a dominant person's + blend x those of fresh person first + i; everything else
    (group, gender, glasses habit, lipstick, beard kind, ...) is the dominant person's, and the
    index (which seeds the person's images) is the fresh one."""
    if not 0 <= blend <= 1:
        raise SynthfaceError(f"lookalike_blend={blend}: give a weight in [0, 1]")
    fresh = world.identities(range(first, first + n))
    src = np.arange(n) % len(dominant["index"])
    out = {}
    for k, v in dominant.items():
        v, f = np.asarray(v)[src], np.asarray(fresh[k])
        if k == "index":
            out[k] = f
        elif v.dtype.kind == "f" and v.shape == f.shape:
            out[k] = (1 - blend) * v + blend * f
        else:
            out[k] = v
    out["lookalike_of"] = np.asarray(dominant["index"])[src]
    return out


def _pick_images(draws: dict, mixes: list, lookalike: np.ndarray, images: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, image indices): per person the first floor(mix x images) smiling draws and the first
    non-smiling ones to make up `images`; the mix cycles over the general people and, separately,
    over the look-alikes (so every dominant face gets each mix when there are enough of them)."""
    rows, js = [], []
    rank = np.zeros(len(lookalike), int)
    for flag in (False, True):
        sel = np.flatnonzero(lookalike == flag)
        rank[sel] = np.arange(len(sel))
    for r in range(len(lookalike)):
        k = int(math.floor(mixes[rank[r] % len(mixes)] * images + 1e-9))
        p = np.flatnonzero(draws["smile"][r] == 1)[:k]
        q = np.flatnonzero(draws["smile"][r] == 0)[:images - k]
        if len(p) < k or len(q) < images - k:
            raise SynthfaceError("a person has too few smiling or non-smiling images drawn; raise the draw count")
        rows += [r] * images
        js += p.tolist() + q.tolist()
    return np.array(rows, int), np.array(js, int)


def designed_people(world, first: int, n_people: int, images: int, mixes: list, render_size: int,
                    dominant: dict | None = None, n_lookalikes: int = 0, blend: float = 0.25,
                    lookalike_first: int | None = None) -> dict:
    """Images of people first .. first + n_people - 1 (and n_lookalikes look-alikes of `dominant`,
    indexed from lookalike_first) with the label mixes `mixes`; per image: identity, smile, glasses,
    habit (the person's glasses habit), lookalike, touched (habit or look-alike), group, gender."""
    from ..world import take
    from ..world.dataset import image_labels
    if not mixes or any(not 0 <= m <= 1 for m in mixes):
        raise SynthfaceError(f"test_smile_mix={mixes}: give fractions of smiling images in [0, 1]")
    people = world.identities(range(first, first + n_people))
    people["lookalike_of"] = np.full(n_people, -1)
    if n_lookalikes:
        if dominant is None:
            raise SynthfaceError("look-alikes need the dominant people")
        look = lookalikes(world, dominant, lookalike_first if lookalike_first is not None else first + n_people,
                          n_lookalikes, blend)
        people = {k: np.concatenate([np.asarray(people[k]), np.asarray(look[k])]) for k in people}
    is_look = people["lookalike_of"] >= 0
    rows, js = _pick_images(label_draws(world, people, 6 * images), mixes, is_look, images)
    lab = image_labels(world, take(people, rows), js)
    habit = people["glasses_habit"][rows].astype(int)
    look = is_look[rows].astype(int)
    return {"images": render_images(world, people, rows, js, render_size), "identity": people["index"][rows],
            "smile": lab["smile"], "glasses": lab["glasses"], "habit": habit, "lookalike": look,
            "touched": np.maximum(habit, look), "group": people["group"][rows], "gender": people["gender"][rows]}


def score(people: dict, pred: np.ndarray) -> dict:
    """The sweep's figures for predictions `pred` on a designed_people set: over all people (with
    the demographic groups), on the glasses-habit people and the others, and on the touched people
    (glasses habit or look-alike) and the look-alikes alone, where there are any."""
    y, ident = people["smile"], people["identity"]
    m = identity_robustness(y, pred, ident, groups=people["group"])
    out = {k: m[k] for k in OVERALL_KEYS}
    habit = people["habit"] == 1
    out["accuracy_glasses_habit"] = float((pred[habit] == y[habit]).mean()) if habit.any() else float("nan")
    out["accuracy_no_habit"] = float((pred[~habit] == y[~habit]).mean()) if (~habit).any() else float("nan")
    neg = habit & (y == 0)
    out["false_smile_rate_glasses_habit"] = float(pred[neg].mean()) if neg.any() else float("nan")
    for name, sel in (("touched", people.get("touched")), ("lookalike", people.get("lookalike"))):
        if sel is None or not np.any(sel == 1):
            continue
        sel = sel == 1
        t = identity_robustness(y[sel], pred[sel], ident[sel])
        out[f"{name}_accuracy"] = t["accuracy"]
        out[f"{name}_worst_10pct_identity_accuracy"] = t["worst_10pct_identity_accuracy"]
        out[f"{name}_people"] = t["n_identities"]
    return out


def choose_factor(calib_scores: dict) -> float:
    """The bandwidth factor whose model did best on the calibration people: highest worst-10 %
    identity accuracy, then highest accuracy, then the smaller factor. calib_scores: {factor:
    score() dict}."""
    if not calib_scores:
        raise SynthfaceError("no bandwidth factor was tried")
    return max(calib_scores, key=lambda f: (calib_scores[f]["worst_10pct_identity_accuracy"],
                                            calib_scores[f]["accuracy"], -f))


def design_lines(cfg, info: dict) -> list[str]:
    """The report's paragraphs on the test people and the CID bandwidth."""
    mixes = list(cfg.test_smile_mix)
    test = (f"Test: {cfg.test_people} people of the general population (balanced demographics) "
            + (f"and {cfg.test_lookalikes} look-alikes of the dominant people (their faces blended with a fresh "
               f"person's, weight {cfg.lookalike_blend} on the fresh one) " if cfg.test_lookalikes else "")
            + f"x {cfg.test_images} images; "
            + ("half of each person's images smiling" if mixes == [0.5] else
               f"each person's fraction of smiling images cycles through {mixes}")
            + ". The touched people are those with the glasses habit and the look-alikes: the training set's "
              "shortcut (glasses, or a dominant face -> smiling) calls them smiling when they are not.")
    cal = (f"The recogniser's median same-person distance is {info['same_person_distance']:.3f} on "
           f"{cfg.calib_people} calibration people outside both the pool and the test set. ")
    if cfg.bandwidth_grid:
        chosen = info.get("chosen_factors", {})
        bw = (f"CID bandwidth: a factor from {list(cfg.bandwidth_grid)} x that distance, chosen per training set "
              f"by the worst-10 % identity accuracy (ties: accuracy) of its model on validation images of "
              f"{cfg.val_people} further calibration people and {cfg.val_lookalikes} look-alikes in the test "
              f"set's design, never on the test people"
              + (" (chosen, per rho over seeds: " + "; ".join(f"rho {r}: {v}" for r, v in chosen.items()) + ")"
                 if chosen else "") + ".")
    else:
        bw = (f"CID bandwidth: {info['bandwidth']:.3f} = {cfg.bandwidth_factor} x that distance, fixed before "
              f"training, not tuned on the test set.")
    return [test, "", cal + bw + " `cid-default` uses the issue's default bandwidth (median 10th-neighbour distance "
            f"per class: {info['default_bandwidth']})."]
