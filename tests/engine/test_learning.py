"""Learning the way a brokerage labels: horizon, lost, expiry; one trainer; versions; rollback."""

from __future__ import annotations

import math
import pickle
import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from engine.app import build_parts
from engine.dataflow import build_flow, run_flow
from engine.learning import Learner
from engine.model import ModelSet, OnlineModel
from engine.model_store import ModelStore
from engine.probability import log_odds_blend
from engine.reasons import explain
from engine.records import RecordReader
from engine.scoring import assess
from engine.settings import load_settings
from engine.streams import Producer
from features.definitions import model_input

T0 = 1_767_225_600.0
DAY = 86_400.0


def _run(client: Any, settings: Any, events: list[dict[str, Any]]) -> Any:
    parts = build_parts(settings, client)
    Producer(client, parts.names, 10**9).send(events)
    run_flow(build_flow(parts, bounded=True))
    return parts


def _labels(client: Any, prefix: str) -> list[dict[str, Any]]:
    return [msgpack.unpackb(f[b"l"], raw=False) for _, f in client.xrange(f"{{{prefix}}}:labels")]


def ev(eid: str, lead: str, etype: str, ts: float, **kw: Any) -> dict[str, Any]:
    return {"event_id": eid, "lead_id": lead, "type": etype, "ts": ts, "tenant": "t", **kw}


def test_labels_follow_the_horizon_lost_and_expiry(client: Any, make_settings: Any) -> None:
    settings = make_settings(streams={"partitions": 1})
    events = [
        # P: a hand-raise (snapshot), appointment 10 days later -> positive
        ev("p1", "P", "showing_request", T0),
        ev("p2", "P", "appointment_set", T0 + 10 * DAY),
        # L: snapshot, then lost -> negative
        ev("l1", "L", "inquiry", T0 + DAY),
        ev("l2", "L", "lost", T0 + 2 * DAY),
        # Q: snapshot, outcome 40 days later is outside H -> the snapshot expires negative first
        ev("q1", "Q", "call_request", T0 + 2 * DAY),
        ev("q2", "Q", "appointment_set", T0 + 42 * DAY),
        # S: snapshot, then silence; the clock moves on through another lead -> expiry
        ev("s1", "S", "inquiry", T0 + 3 * DAY),
        ev("z1", "Z", "page_view", T0 + 45 * DAY),
    ]
    events.sort(key=lambda e: e["ts"])
    _run(client, settings, events)
    labels = {x["lead"]: (x["y"], x["outcome"]) for x in _labels(client, settings.redis.key_prefix)}
    # every snapshot is learned once its horizon has passed, with the label it earned
    assert labels["P"] == (True, "appointment_set")  # outcome within H
    assert labels["L"] == (False, "lost")
    assert labels["Q"] == (False, None)  # the outcome came after H: expired unlabelled
    assert labels["S"] == (False, None)
    assert len(labels) == 4


def test_a_replayed_batch_learns_nothing_twice(client: Any, make_settings: Any) -> None:
    settings = make_settings(streams={"partitions": 1})
    events = [
        ev("a", "A", "inquiry", T0),
        ev("b", "A", "appointment_set", T0 + DAY),
        ev("z", "Z", "page_view", T0 + 40 * DAY),  # the horizon passes: the label settles
    ]
    parts = _run(client, settings, events)
    learned = parts.processor.learner.live.labels_seen
    # the same events again (an at-least-once source replaying): no new label, no new learning
    parts2 = _run(client, settings, events)
    assert parts2.processor.learner.live.labels_seen == learned == 1
    assert len(_labels(client, settings.redis.key_prefix)) == 1


def _example(i: int, y: bool) -> dict[str, Any]:
    return {
        "id": f"e{i}",
        "seg": "all",
        "x": {"saves": float(y) + random.random()},
        "y": y,
        "pb": 0.5,
        "proc": 1,
    }


def test_one_trainer_publishes_and_a_second_process_picks_it_up(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings(scoring={"publish_every_labels": 2, "model_check_s": 0.01})
    store = ModelStore(client, settings.redis.key_prefix)
    trainer = Learner(settings, store, process_id=0)
    scorer = Learner(settings, store, process_id=1)
    assert trainer.trainer and not scorer.trainer
    assert not scorer.learn(_example(0, True))  # scorers never learn
    pipe = client.pipeline()
    for i in range(4):  # the scorer's labelled examples travel on the labels stream
        pipe.xadd(store.keys.labels, {"l": msgpack.packb(_example(i, i % 2 == 0))})
    pipe.execute()
    assert trainer.catch_up()
    assert trainer.live.labels_seen == 4
    version, blob, meta = trainer.publication() or (0, b"", {})
    assert version == 1 and meta["labels_seen"] == 4 and meta["river_version"]
    from engine.model_store import publish_commands

    pipe = client.pipeline()
    publish_commands(pipe, store.keys, version, blob, meta)
    pipe.execute()
    scorer.refresh(force=True)
    assert scorer.serving_version == 1
    assert scorer.serving.labels_seen == 4
    assert not trainer.catch_up()  # exactly once: the position moved past them


def test_the_trainer_reads_other_processes_labels_in_its_commit(
    client: Any, make_settings: Any
) -> None:
    """The catch-up rides in the batch's transaction: another process's labels are learned
    right after the trainer's next commit, its own (learned inline) are skipped, and no batch
    reads the labels stream with a round trip of its own."""
    settings = make_settings(streams={"partitions": 1})
    parts = build_parts(settings, client)
    learner, store = parts.processor.learner, ModelStore(client, settings.redis.key_prefix)
    reads: list[str] = []
    real = learner._store.labels_after

    def counted(position: str, count: int = 1_000) -> list[tuple[str, bytes]]:
        reads.append(position)
        return real(position, count)

    learner._store.labels_after = counted  # type: ignore[method-assign]
    for i in range(3):  # the scorer process's labelled examples
        client.xadd(store.keys.labels, {"l": msgpack.packb(_example(i, i % 2 == 0))})
    outcome = [ev("a", "A", "inquiry", T0), ev("b", "A", "lost", T0 + DAY)]
    Producer(client, parts.names, 10**9).send(outcome)
    run_flow(build_flow(parts, bounded=True))
    assert reads == []  # no read of its own before a batch
    own = len(_labels(client, settings.redis.key_prefix)) - 3
    assert own == 1  # the lost lead the batch labelled (learned at once)
    assert learner.live.labels_seen == 3 + own  # each once: theirs from the commit's read
    last_id = client.xrevrange(store.keys.labels, count=1)[0][0].decode()
    assert learner.live.position == last_id
    assert learner.catch_up_pending()  # the position moved after the last commit
    assert not learner.catch_up_pending()


def test_a_full_read_in_the_commit_is_read_on_before_the_next_batch(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings()
    store = ModelStore(client, settings.redis.key_prefix)
    trainer = Learner(settings, store, process_id=0)
    pipe = client.pipeline()
    for i in range(1_500):
        pipe.xadd(store.keys.labels, {"l": msgpack.packb(_example(i, i % 2 == 0))})
    pipe.execute()
    since = trainer.catch_up_in_commit() or "0-0"
    trainer.caught_up(store.labels_after(since), since)
    assert trainer.live.labels_seen == 1_000  # one read's worth
    assert trainer.catch_up_pending()  # reads the other 500 now
    assert trainer.live.labels_seen == 1_500
    assert not trainer.catch_up_pending()
    scorer = Learner(settings, store, process_id=1)
    assert scorer.catch_up_in_commit() is None  # a scorer reads no labels


def test_a_commits_read_after_a_reload_is_left_to_the_reload(
    client: Any, make_settings: Any
) -> None:
    """A worker's commit read the labels after position P; meanwhile another worker reloaded
    the model from an older checkpoint: those rows are not learned over the gap (the reload's
    own catch-up reads from the older position), and the position never moves back."""
    settings = make_settings()
    store = ModelStore(client, settings.redis.key_prefix)
    trainer = Learner(settings, store, process_id=0)
    ids = [client.xadd(store.keys.labels, {"l": msgpack.packb(_example(i, i % 2 == 0))})
           for i in range(6)]  # fmt: skip
    ids = [i.decode() for i in ids]
    later = store.labels_after(ids[2])  # what a commit read after the third label
    trainer.caught_up(later, ids[2])  # ... but the live model is back at 0-0 (a reload)
    assert trainer.live.labels_seen == 0 and trainer.live.position == "0-0"
    assert not trainer.catch_up_pending()
    assert trainer.catch_up() and trainer.live.labels_seen == 6
    assert trainer.live.position == ids[-1]
    trainer.caught_up(store.labels_after(ids[0]), ids[0])  # an older read: no move back
    assert trainer.live.position == ids[-1] and trainer.live.labels_seen == 6


def test_label_rows_read_a_parsed_and_a_cluster_pipelines_raw_reply() -> None:
    from engine.model_store import label_rows

    parsed = [(b"1-0", {b"l": b"x"}), (b"2-5", {b"l": b"y"})]
    raw = [[b"1-0", [b"l", b"x"]], [b"2-5", [b"l", b"y"]]]  # (a cluster transaction's reply)
    assert label_rows(parsed) == label_rows(raw) == [("1-0", b"x"), ("2-5", b"y")]
    assert label_rows([]) == []


def test_rollback_pins_a_version_for_every_scorer(client: Any, make_settings: Any) -> None:
    settings = make_settings(scoring={"publish_every_labels": 1, "model_check_s": 0.01})
    store = ModelStore(client, settings.redis.key_prefix)
    trainer = Learner(settings, store, process_id=0)
    from engine.model_store import publish_commands

    for i in range(2):
        trainer.learn(_example(i, i == 0))
        pipe = client.pipeline()
        publish_commands(pipe, store.keys, *(trainer.publication() or ()))
        pipe.execute()
    scorer = Learner(settings, store, process_id=1)
    assert scorer.serving_version == 2
    store.pin(1)
    scorer.refresh(force=True)
    trainer.refresh(force=True)
    assert scorer.serving_version == 1 and scorer.serving.labels_seen == 1
    assert trainer.serving_version == 1 and trainer.live.labels_seen == 2  # keeps learning
    store.unpin()
    scorer.refresh(force=True)
    trainer.refresh(force=True)
    assert scorer.serving_version == 2 and trainer.serving is trainer.live


def test_the_top_reason_moves_the_score_the_way_it_says(make_settings: Any) -> None:
    settings = make_settings()
    rng = random.Random(3)
    model = OnlineModel()
    names = settings.features.names
    for i in range(600):
        saves = rng.randint(0, 4)
        feats = {"saves": saves, "views_7d": rng.randint(0, 9), "source": "website"}
        model.learn(str(i), model_input(feats, names), rng.random() < 0.1 + 0.2 * saves)
    feats = {"saves": 4, "views_7d": 2, "source": "website", "side": "buyer", "timeline": "unknown"}
    x = model_input(feats, names)
    p = model.probability(x)
    score = assess(feats, {}, settings, p, 1.0)
    assert score.model_weight == 1.0
    pros, _ = explain(feats, {}, settings, {}, model.contributions(x), score.model_weight)
    assert pros[0] == "saved 4 homes"
    without = dict(feats, saves=0)
    p_without = model.probability(model_input(without, names))
    assert p is not None and p_without is not None and p_without < p


def test_model_set_round_trip_keeps_quality(make_settings: Any) -> None:
    models = ModelSet(("buyer", "seller"))
    for i in range(50):
        models.learn({**_example(i, i % 3 == 0), "seg": "seller" if i % 2 else "buyer"})
    again = ModelSet.loads(models.dumps())
    assert again.status()["served_score"]["labels"] == 50
    assert again.segment_of("seller") == "seller" and again.segment_of("both") == "buyer"


def test_calibrated_prior_memo_follows_each_label() -> None:
    # calibrated priors are remembered between two labels: each label must refresh them
    models = ModelSet()
    raws = (0.02, 0.1, 0.35, 0.6, 0.9)
    for i in range(60):
        for p in raws:
            models.calibrated_prior(p)  # fills the memo with the calibration before label i
        models.learn({**_example(i, i % 4 == 0), "pr": raws[i % len(raws)]})
        for p in raws:
            fresh = models.prior_calibration.probability(math.log(p / (1 - p)))
            assert models.calibrated_prior(p) == min(0.999, max(0.001, fresh))
    again = ModelSet.loads(models.dumps())
    assert "_prior_memo" not in pickle.loads(models.dumps())  # a cache, not model state
    assert "_platt" not in pickle.loads(models.dumps())
    assert [again.calibrated_prior(p) for p in raws] == [models.calibrated_prior(p) for p in raws]


def _odds_times_4(p: float) -> float:
    return 4 * p / (1 - p) / (1 + 4 * p / (1 - p))


@pytest.mark.parametrize(
    ("truth", "probes"),
    [
        (lambda p: p, {0.02: 0.02, 0.1: 0.1, 0.3: 0.3, 0.5: 0.5}),  # honest: stays honest
        (_odds_times_4, {0.02: 0.075, 0.05: 0.174, 0.1: 0.308, 0.3: 0.632}),  # odds 4x low
    ],
)
def test_the_prior_calibration_settles_on_its_labels(
    truth: Callable[[float], float], probes: dict[float, float]
) -> None:
    """Points whose odds are 4x too low (the raw prior 0.1 of leads converting at 0.31):
    after 4,000 labels the calibrated prior says so, within 0.04. One SGD step a label
    (River's LogisticRegression, lr 0.05, before) wandered far off; an honest prior stays
    honest."""
    models, rng = ModelSet(), random.Random(1)
    for i in range(4_000):
        p = rng.uniform(0.01, 0.6)
        models.learn({**_example(i, rng.random() < truth(p)), "pr": p})
    for raw, rate in probes.items():
        assert abs(models.calibrated_prior(raw) - rate) < 0.04, (raw, rate)


def test_a_model_stored_with_rivers_prior_calibration_loads() -> None:
    """Models published before the Newton Platt kept River's SGD one: its map carries over."""
    from river import linear_model, optim

    models = ModelSet()
    old = linear_model.LogisticRegression(optimizer=optim.SGD(0.05))
    for i in range(50):
        old.learn_one({"z": (i % 7) - 3.0}, i % 3 == 0)
    models.prior_calibration = old  # type: ignore[assignment]
    models.prior_labels = 50
    blob = pickle.dumps({**pickle.loads(models.dumps()), "_platt": (1.0, 0.0)})
    again = ModelSet.loads(blob)
    want = old.predict_proba_one({"z": math.log(0.2 / 0.8)})[True]
    assert abs(again.calibrated_prior(0.2) - want) < 1e-12
    again.learn({**_example(51, True), "pr": 0.2})  # and it goes on learning


def test_the_score_calibration_learns_the_blend_as_served_now_once_per_example() -> None:
    """Each new example teaches the served score's map the blend the current scorers give
    its moment (before they learn it); an example learned again teaches nothing."""
    models, rng = ModelSet(), random.Random(2)
    for i in range(300):
        models.learn({**_example(i, rng.random() < 0.3), "pr": rng.uniform(0.05, 0.5)})
    cal = models.score_calibration
    assert cal.labels == 300
    before = pickle.dumps(cal)
    models.learn({**_example(7, True), "pr": 0.2})  # already learned
    assert pickle.dumps(models.score_calibration) == before
    ex = {**_example(300, True), "pr": 0.2}
    seg, x = "all", ex["x"]
    served = log_odds_blend(models.calibrated_prior(0.2), models.model(seg).probability(x),
                            models.model_weight(seg))  # fmt: skip
    want = pickle.loads(before)
    want.learn(served, True)
    models.learn(ex)
    probes = [i / 20 for i in range(1, 20)]
    assert [models.calibrated_score(p) for p in probes] == [want.probability(p) for p in probes]


def test_a_model_stored_before_the_score_calibration_loads_with_the_identity() -> None:
    models = ModelSet()
    for i in range(20):
        models.learn({**_example(i, i % 2 == 0), "pr": 0.3})
    state = pickle.loads(models.dumps())
    del state["score_calibration"]
    again = ModelSet.loads(pickle.dumps(state))
    assert again.calibrated_score(0.37) == 0.37
    again.learn({**_example(99, True), "pr": 0.2})
    assert again.score_calibration.labels == 1


def test_the_served_score_is_the_calibrated_blend() -> None:
    """``assess`` serves the blend through the map it is given (the score stage gives it
    ``ModelSet.calibrated_score``)."""
    S = load_settings(environ={})
    feats = {"views_7d": 3, "timeline": "0-3m"}
    plain = assess(feats, {}, S, 0.4, 1.0)
    halved = assess(feats, {}, S, 0.4, 1.0, calibrate=lambda p: p / 2)
    assert halved.probability == round(plain.probability / 2, 6)
    assert halved.score == int(round(plain.probability / 2 * 100))


# -- moments: learn from the vector just before the outcome, at once ------------------------


def test_an_outcome_labels_the_vector_just_before_it_and_is_learned_at_once(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings(streams={"partitions": 1})
    events = [
        ev("x1", "X", "page_view", T0),
        ev("x2", "X", "lost", T0 + 60),  # an explicit negative: outcomes are learned at once
        ev("a1", "A", "lead_created", T0 + 100, source="referral"),
        ev("a2", "A", "property_save", T0 + 200, property_id="P1"),
        ev("a3", "A", "property_save", T0 + 300, property_id="P2"),
        ev("a4", "A", "appointment_set", T0 + 400),
    ]
    parts = _run(client, settings, events)
    labels = {x["lead"]: x for x in _labels(client, settings.redis.key_prefix)}
    a = labels["A"]
    assert a["y"] is True and a["kind"] == "latest" and a["ts"] == T0 + 300  # the last moment
    assert a["x"]["saves"] == pytest.approx(math.log1p(2))  # as it stood before the outcome
    assert a["x"]["source=referral"] == 1.0  # the profile level reaches the model
    assert labels["X"]["y"] is False
    # learned at once: both examples, in the run that carried them (no horizon passed)
    assert parts.processor.learner.live.labels_seen == 2
    assert len(labels) == 2  # no example from A's earlier, emptier moments


def test_outcomes_for_unknown_leads_twice_or_both_ways_learn_once(
    client: Any, make_settings: Any
) -> None:
    settings = make_settings(streams={"partitions": 1})
    events = [
        ev("u1", "U", "appointment_set", T0),  # unknown lead: nothing to label
        ev("x1", "X", "page_view", T0 + 10),
        ev("x2", "X", "lost", T0 + 20),
        ev("x3", "X", "appointment_set", T0 + 30),  # after lost: the first outcome won
        ev("y1", "Y", "inquiry", T0 + 40),
        ev("y2", "Y", "appointment_set", T0 + 50),
        ev("y3", "Y", "agreement_signed", T0 + 60),  # a second positive: nothing new
        ev("y4", "Y", "page_view", T0 + 70),  # after its outcome: no new moment
        ev("z1", "Z", "page_view", T0 + 40 * DAY),  # every horizon passes
    ]
    parts = _run(client, settings, events)
    labels = _labels(client, settings.redis.key_prefix)
    by_lead = [(x["lead"], x["y"], x["outcome"]) for x in labels if x["lead"] != "Z"]
    assert sorted(by_lead) == [("X", False, "lost"), ("Y", True, "appointment_set")]
    assert parts.processor.learner.live.labels_seen == 2  # Z's moment is still open
    record = RecordReader(settings).read(client, [("t", "Y")])[0]
    assert record["outcome"] == "appointment_set"


def test_a_positives_only_stream_learns_positives_at_their_horizon(
    client: Any, make_settings: Any
) -> None:
    """Won dates and no `lost`: a positive waits for its horizon, with its period's negatives."""
    settings = make_settings(streams={"partitions": 1})
    events = [
        ev("a1", "A", "inquiry", T0),
        ev("a2", "A", "appointment_set", T0 + DAY),
        ev("b1", "B", "page_view", T0 + 2 * DAY),
    ]
    parts = _run(client, settings, events)
    assert parts.processor.learner.live.labels_seen == 0  # held: no negative could exist yet
    parts = _run(client, settings, [ev("z1", "Z", "page_view", T0 + 40 * DAY)])
    labels = {x["lead"]: x["y"] for x in _labels(client, settings.redis.key_prefix)}
    assert labels == {"A": True, "B": False}


# -- train/serve: the labels stream reproduces what was served --------------------------------


@pytest.mark.parametrize(
    "scoring",
    [{"segments": ["buyer", "seller"]}, {"model": "forest"}],
    ids=["logistic-by-side", "forest"],
)
def test_relearning_the_labels_stream_reproduces_the_served_model_probability(
    client: Any, make_settings: Any, scoring: dict[str, Any]
) -> None:
    """Train/serve: each example's ``x`` is the vector the model scored (same features,
    clock features as measured then, same segment) and the model learned the stream's
    examples in its order, so a fresh model relearning the stream predicts every served
    ``pm`` again. A feature measured differently at learn time, a scaler or segment
    that differs, or examples learned out of stream order would break it."""
    from benchmarks.quality import relearned
    from benchmarks.simulator import SimConfig, generate

    settings = make_settings(streams={"partitions": 1}, scoring=scoring)
    cfg = SimConfig(seed=11, leads=60, days=50.0, start_ts=T0)
    events = list(generate(cfg))
    events.append(ev("zz", "~flush", "page_view", T0 + 90 * DAY))  # every horizon passes
    _run(client, settings, events)
    examples = _labels(client, settings.redis.key_prefix)
    sc = settings.scoring
    fresh = ModelSet(sc.segments, sc.learning_rate, sc.model, sc.evidence_window)
    pairs = relearned(examples, fresh)
    served = [(a, b) for a, b in pairs if a is not None]
    assert len(served) >= 40  # enough scored moments for the check to mean something
    assert all(b is not None for _, b in served)  # ready exactly when the engine was
    assert all(a is None for a, b in pairs if b is None)
    worst = max(abs(a - b) for a, b in served)
    assert worst < 1e-6  # `pm` is stored rounded to 6 places
    assert {ex["seg"] for ex in examples} <= set(sc.segments)
