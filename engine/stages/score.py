"""Stage 4: score an event (prior + model), reasons as codes where read, the score record.

Every event is scored; reasons are worked out only for scores someone reads (alerts,
and the record stored for each lead's last event of the batch), in words only for
alerts (a stored record is put into words when read, ``engine/records.py``).
"""

from __future__ import annotations

from engine.events import Event
from engine.learning import Learner
from engine.reasons import explain_codes, low_reasons, reason_text, render
from engine.records import ScoreRecord
from engine.scoring import Score, assess, prior
from engine.settings import Settings
from engine.sinks import BatchEffects, BucketMove
from engine.stages.batch import LeadInBatch, Scored
from features.definitions import input_plan
from features.store import FeatureReply

__all__ = ["Scorer"]


class Scorer:
    def __init__(self, settings: Settings, learner: Learner) -> None:
        self._s = settings
        self.learner = learner
        self._inputs = input_plan(settings.features.model_names)  # once, not per event

    def score(self, event: Event, reply: FeatureReply, lead: LeadInBatch) -> Scored:
        """The served score of the lead as of ``event`` (the per-event hot path)."""
        models = self.learner.serving
        segment = models.segment_of(str(reply.features.get("side", "")))
        model = models.model(segment)
        raw_prior, points = prior(reply.features, self._s)
        p_model = model.probability_of(reply.features, self._inputs)  # None: not ready
        score = assess(
            reply.features, reply.context, self._s, p_model, models.model_weight(segment),
            models.calibrated_prior, raw_prior, lead.outcome, models.calibrated_score,
        )  # fmt: skip
        return Scored(event, score, reply, p_model is not None, model, points, segment)

    def explained(self, s: Scored, lead: LeadInBatch, words: bool) -> Score:
        """The score with its reason codes and, with ``words``, their text."""
        score, reply = s.score, s.reply
        contributions = (
            s.model.contributions_of(reply.features, self._inputs)
            if s.ready and score.model_weight
            else {}
        )
        low = low_reasons(reply.context, lead.outcome, lead.outcome_ts, self._s)
        f, ctx = reply.features, reply.context
        codes = explain_codes(f, ctx, self._s, s.points, contributions, score.model_weight,
                              len(low))  # fmt: skip
        if not words:
            return score.with_codes(codes)
        return score.with_codes(codes, render(*codes, f, ctx, low))

    @staticmethod
    def record(event: Event, score: Score, lead: LeadInBatch) -> ScoreRecord:
        """The lead's score record as stored (``engine/records.py``)."""
        a = lead.alert
        return ScoreRecord(
            tenant=event.tenant, lead_id=event.lead_id, score=score.score,
            probability=score.probability, bucket=score.bucket, tier=score.tier,
            pros=score.codes[0], cons=score.codes[1],
            prior_probability=score.prior_probability,
            raw_prior_probability=score.raw_prior_probability or 0.0,
            model_weight=score.model_weight, ts=event.ts, last_event_id=event.event_id,
            last_alert_ts=a.last_alert_ts, jump_base=a.jump_base, jump_base_ts=a.jump_base_ts,
            moment="l" if lead.pending is not None or lead.snaps.tail_latest else "",
            outcome=lead.outcome, outcome_ts=lead.outcome_ts, bucket_by=score.bucket_by,
        )  # fmt: skip

    def store(self, s: Scored, lead: LeadInBatch, fx: BatchEffects) -> None:
        """Store the lead's record of ``s`` (already :meth:`explained`) in the batch."""
        event = s.event
        fx.score_records[(event.tenant, event.lead_id)] = self.record(event, s.score, lead)
        lead.latest_view = (s.reply.features, s.reply.context)

    @staticmethod
    def bucket_move(key: tuple[str, str], lead: LeadInBatch, fx: BatchEffects) -> None:
        """Note a lead whose stored bucket its new record changes (CRM write-back): a move
        into or out of ``lost`` counts; a first score of P5 and visitors do not."""
        record = fx.score_records[key]
        before, by_before = lead.stored_bucket
        lost_moved = (by_before == "lost") != (record.bucket_by == "lost")
        if key[1].startswith("~") or not (before != record.bucket or lost_moved):
            return
        if not before and record.bucket == "P5":
            return
        top = ""
        if record.pros and lead.latest_view is not None:
            features, context = lead.latest_view
            top = reason_text(record.pros[0], features, context) or ""
        fx.bucket_changes.append(BucketMove(key[0], key[1], before, by_before, top))
        lead.stored_bucket = (record.bucket, record.bucket_by)
