"""Route dependencies as ``Annotated`` aliases; tests swap them with ``dependency_overrides``.

Everything here is opened once in the app's lifespan and only looked up per request. The
functions are ``async`` because they never block: FastAPI would run a plain ``def`` dependency in
the thread pool, one hop per dependency per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.catalog import Catalog
from core.settings import Settings
from serving.api.errors import ProblemError
from serving.auth import ApiKeys, Role, may_call
from serving.consents import ConsentService
from serving.decision.inputs import FeatureSource
from serving.decision_log import DecisionLog
from serving.experiments import Experiments
from serving.feature_reader import OnlineFeatureSource, OpenFeatureStore
from serving.metrics import ApiMetrics
from serving.model_follower import ChampionFollower
from serving.monitoring import DriftMonitor
from serving.offers import OffersService
from serving.scoring_model import ModelHolder


@dataclass
class Services:
    """What the routes use, opened in the lifespan."""

    settings: Settings
    keys: ApiKeys
    catalog: Catalog
    metrics: ApiMetrics
    models: ModelHolder
    log: DecisionLog
    experiments: Experiments
    feature_store: OpenFeatureStore
    offers: OffersService
    consents: ConsentService
    follower: ChampionFollower
    drift: DriftMonitor

    @property
    def features(self) -> OnlineFeatureSource | None:
        """The open feature source; None while the store is down."""
        return self.feature_store.source

    def current_features(self) -> OnlineFeatureSource | None:
        """The open feature source; a closed store is reopened here (rate-limited by the opener).

        Called from the thread-pool routes, never from an async dependency: opening blocks.
        """
        return self.feature_store.current()

    def close(self) -> None:
        # First, so that no model load is started against stores being closed.
        self.follower.stop()
        self.drift.stop()
        self.feature_store.close()
        self.log.close()


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:  # a request before the lifespan finished, or after it ended
        raise ProblemError(503, "the service is starting or stopping", kind="not-ready")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_catalog(services: ServicesDep) -> Catalog:
    return services.catalog


async def get_features(services: ServicesDep) -> FeatureSource | None:
    return services.features


async def get_models(services: ServicesDep) -> ModelHolder:
    return services.models


async def get_decision_log(services: ServicesDep) -> DecisionLog:
    return services.log


async def get_experiments(services: ServicesDep) -> Experiments:
    return services.experiments


async def get_metrics(services: ServicesDep) -> ApiMetrics:
    return services.metrics


async def get_offers(services: ServicesDep) -> OffersService:
    return services.offers


async def get_consents(services: ServicesDep) -> ConsentService:
    return services.consents


async def get_follower(services: ServicesDep) -> ChampionFollower:
    return services.follower


CatalogDep = Annotated[Catalog, Depends(get_catalog)]
FeaturesDep = Annotated[FeatureSource | None, Depends(get_features)]
ModelDep = Annotated[ModelHolder, Depends(get_models)]
DecisionLogDep = Annotated[DecisionLog, Depends(get_decision_log)]
ExperimentsDep = Annotated[Experiments, Depends(get_experiments)]
MetricsDep = Annotated[ApiMetrics, Depends(get_metrics)]
OffersDep = Annotated[OffersService, Depends(get_offers)]
ConsentsDep = Annotated[ConsentService, Depends(get_consents)]
FollowerDep = Annotated[ChampionFollower, Depends(get_follower)]

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from OFFERS_API_KEYS: `Authorization: Bearer <key>`.",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def current_role(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Role:
    """The caller's role from the bearer key; 401 without a known key."""
    if credentials is None:
        raise ProblemError(
            401,
            "send an API key as Authorization: Bearer <key>",
            kind="unauthorized",
            headers=_CHALLENGE,
        )
    role = services.keys.role_of(credentials.credentials)
    if role is None:
        raise ProblemError(401, "the API key is not known", kind="unauthorized", headers=_CHALLENGE)
    return role


CurrentRole = Annotated[Role, Depends(current_role)]


def require_role(needed: Role) -> Callable[[Role], Awaitable[Role]]:
    """A guard that lets ``needed`` and admin through, and answers 403 to other roles."""

    async def guard(role: CurrentRole) -> Role:
        if not may_call(role, needed):
            raise ProblemError(
                403, f"this route needs the {needed} role; the key has {role}", kind="forbidden"
            )
        return role

    guard.__name__ = f"require_{needed}"
    return guard


RendererRole = Annotated[Role, Depends(require_role("renderer"))]
MarketingRole = Annotated[Role, Depends(require_role("marketing"))]
ConsentRole = Annotated[Role, Depends(require_role("consent"))]
AdminRole = Annotated[Role, Depends(require_role("admin"))]
