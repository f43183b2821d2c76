"""One training run: the latest accepted statistics of each region → a strategy → a model, with
each region's leave-one-out influence on it. Quarantined statistics are not read (the store
leaves them out). Requests and outcomes are value objects; the servicer translates the wire's."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from fedstore.aggregator.errors import NotEnoughStatistics, Rejected
from fedstore.aggregator.registry.model import ModelCandidate
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.aggregator.registry.text import check_model_name
from fedstore.aggregator.store import SubmissionStore
from fedstore.aggregator.training.influence import RegionInfluence, influence
from fedstore.aggregator.training.overlap import one_release_per_region
from fedstore.aggregator.training.pooled import pool
from fedstore.aggregator.training.ridge import check_ridge_lambda
from fedstore.aggregator.training.signal import Signal, signals
from fedstore.aggregator.training.strategies import make_strategy
from fedstore.federation import TrainingConfig
from fedstore.federation.consent import ConsentBasis
from fedstore.federation.errors import ConfigError
from fedstore.federation.training import LinearModel, schema_hash, training_spec


@dataclass(frozen=True)
class TrainRequest:
    feature_service: str
    strategy: str = "lda"
    period: str | None = None  # None: each region's latest statistics
    ridge_lambda: float = 0.0  # 0: the strategy's default
    model_name: str = ""  # "": <feature service>_<strategy>


@dataclass(frozen=True)
class Fitted:
    model: LinearModel
    submissions: list[str]
    epsilon_by_region: dict[str, float]
    examples: float
    influence: list[RegionInfluence]
    signal: list[Signal]
    consent_by_region: dict[str, ConsentBasis] = field(default_factory=dict)
    # releases left out because another kept release already counts their regions (``overlap``)
    set_aside: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TrainOutcome:
    model_name: str
    model_version: int  # 0 when the centre keeps no registry
    strategy: str
    fitted: Fitted
    quarantined: list[str]  # training submissions quarantine held out of this run


def fit(store: SubmissionStore, request: TrainRequest, *,
        minimum_expected_auc: float = TrainingConfig.minimum_expected_auc) -> Fitted:
    try:
        spec = training_spec(request.feature_service)
    except ConfigError as e:
        raise Rejected(str(e), reason="UNKNOWN_FEATURE_SERVICE") from None
    check_ridge_lambda(request.ridge_lambda)  # whichever strategy is asked for: the request's field is wrong
    if request.period and not re.fullmatch(r"\d{4}-(0[1-9]|1[0-2])", request.period):
        raise Rejected(f"period {request.period!r} is not YYYY-MM", reason="INVALID_PERIOD")
    strategy = make_strategy(request.strategy, **({"ridge_lambda": request.ridge_lambda}
                                                  if request.strategy == "ridge" else {}))
    # a sum and a member's own release (a centre restarted after storing the sum): one of them
    rows, set_aside = one_release_per_region(store.latest_training(spec.feature_service, request.period))
    pooled = pool(rows, spec.features)
    try:
        # before any model exists: refused in one line when the noise leaves too little signal
        signal = signals(rows, spec, floor=minimum_expected_auc)
        model = strategy.fit(pooled, spec.feature_service)
        regions = influence(rows, spec.features, strategy, spec.feature_service, model)
    except (np.linalg.LinAlgError, ValueError) as e:  # statistics no model can be solved from
        raise NotEnoughStatistics(f"the accepted training statistics give no {strategy.name} model: {e}",
                                  reason="NO_MODEL_FITS") from None
    return Fitted(model, list(pooled.submissions), pooled.epsilon_by_region, pooled.n, regions, signal,
                  pooled.consent_by_region, set_aside)


def train(
    store: SubmissionStore, request: TrainRequest, *, registry: ModelRegistry | None = None, who: str = "",
    quarantined: list[str] | None = None, minimum_expected_auc: float = TrainingConfig.minimum_expected_auc,
) -> TrainOutcome:
    """Fit, and register the result as the next version of its name when the centre keeps a registry
    (the version already registered when the same strategy gave the same model on the same statistics:
    a retried training registers nothing new)."""
    check_model_name(request.model_name, optional=True)  # before any work: the name is kept
    fitted = fit(store, request, minimum_expected_auc=minimum_expected_auc)
    model, n = fitted.model, fitted.examples
    strategy = model.metadata.get("strategy", request.strategy)
    name = request.model_name or f"{model.feature_service}_{strategy}"
    version = 0
    if registry is not None:
        version = registry.register(ModelCandidate(
            name=name, strategy=strategy, feature_service=model.feature_service, features=model.features,
            schema_hash=schema_hash(training_spec(model.feature_service)),
            parameters={"weights": list(model.weights), "intercept": model.intercept, "link": model.link},
            submissions=tuple(fitted.submissions), epsilon_by_region=fitted.epsilon_by_region,
            tags={**model.metadata, "examples": f"{n:.0f}", "period": request.period or "latest"},
            influence=tuple(fitted.influence), consent_basis=fitted.consent_by_region,
        ), who=who, reuse=True).version  # the same statistics again: the version they already gave
    return TrainOutcome(name, version, strategy, fitted, quarantined or [])
