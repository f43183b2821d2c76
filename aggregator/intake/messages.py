"""The edge between the wire and the centre's steps: requests into value objects, outcomes into responses."""

from __future__ import annotations

from datetime import timezone

from google.protobuf.timestamp_pb2 import Timestamp

from fedstore.aggregator.intake.steps import Receipt
from fedstore.aggregator.training.influence import influence_message
from fedstore.aggregator.training.train import TrainOutcome, TrainRequest
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb


def train_request(message: pb.TrainRequest) -> TrainRequest:
    return TrainRequest(feature_service=message.feature_service, strategy=message.strategy or "lda",
                        period=message.period or None, ridge_lambda=message.ridge_lambda,
                        model_name=message.model_name)


def receipt_message(r: Receipt) -> pb.Receipt:
    ts = Timestamp()
    ts.FromDatetime(r.accepted_at.astimezone(timezone.utc))
    return pb.Receipt(submission_id=r.submission_id, receipt_id=r.receipt_id, accepted_at=ts, replay=r.replay,
                      epsilon_spent_in_period=r.epsilon_spent_in_period,
                      quarantined=r.quarantine_rule is not None, quarantine_rule=r.quarantine_rule or "")


def train_result(o: TrainOutcome) -> pb.TrainResult:
    f, model = o.fitted, o.fitted.model
    return pb.TrainResult(
        model_name=o.model_name, model_version=o.model_version,
        strategy=o.strategy, feature_service=model.feature_service, features=model.features,
        weights=model.weights, intercept=model.intercept, link=model.link, submissions=f.submissions,
        epsilon_by_region=f.epsilon_by_region, examples=f.examples,
        influence=[influence_message(i, pb.RegionInfluence) for i in f.influence],
        quarantined=o.quarantined,
        signal=[pb.SignalEstimate(region=s.region, separation=s.separation, noise=s.noise,
                                  auc_without_noise=s.auc_without_noise, expected_auc=s.expected_auc, warning=s.warning)
                for s in f.signal],
        set_aside=f.set_aside,
    )
