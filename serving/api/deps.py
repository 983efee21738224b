"""Route dependencies as ``Annotated`` aliases; tests swap them with ``dependency_overrides``.

Everything here is opened once in the app's lifespan and only looked up per request. The
functions are ``async`` because they never block: FastAPI would run a plain ``def`` dependency in
the thread pool, one hop per dependency per request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from core.catalog import Catalog
from core.settings import Settings
from serving.api.errors import ProblemError
from serving.api.together import WaitingDecisions
from serving.auth import ApiKeys, Role, SessionTokens, may_call
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
from serving.sign_in_throttle import SignInThrottle


@dataclass
class Services:
    """What the routes use, opened in the lifespan."""

    settings: Settings
    keys: ApiKeys
    sessions: SessionTokens
    sign_ins: SignInThrottle
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
    waiting: WaitingDecisions

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


async def get_waiting(services: ServicesDep) -> WaitingDecisions:
    return services.waiting


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
WaitingDep = Annotated[WaitingDecisions, Depends(get_waiting)]
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


def require_role(*allowed: Role) -> Callable[[Role], Awaitable[Role]]:
    """A guard that lets the ``allowed`` roles and admin through, and answers 403 to others."""
    named = " or ".join(allowed)

    async def guard(role: CurrentRole) -> Role:
        if not any(may_call(role, needed) for needed in allowed):
            raise ProblemError(
                403, f"this route needs the {named} role; the key has {role}", kind="forbidden"
            )
        return role

    guard.__name__ = "require_" + "_or_".join(allowed)
    return guard


RendererRole = Annotated[Role, Depends(require_role("renderer"))]
MarketingRole = Annotated[Role, Depends(require_role("marketing"))]
# The consent system's own role, or the renderer's as the product contract has it.
ConsentRole = Annotated[Role, Depends(require_role("consent", "renderer"))]
AdminRole = Annotated[Role, Depends(require_role("admin"))]


# Query parameters ---------------------------------------------------------------------------

UNKNOWN_QUERY = "no such query parameter"
_QUERY_NAMES: dict[int, frozenset[str]] = {}


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters a route takes, its dependencies' included (read once per route)."""
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        names = frozenset(_query_aliases(route.dependant))
        _QUERY_NAMES[id(route)] = names
    return names


def _query_aliases(dependant: Dependant) -> Iterator[str]:
    for param in dependant.query_params:
        yield param.alias
    for sub in dependant.dependencies:
        yield from _query_aliases(sub)


def _refuse_unknown(request: Request) -> None:
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.query_params:
        return
    unknown = sorted(set(request.query_params.keys()) - _query_names(route))
    if unknown:
        raise RequestValidationError(
            [
                {"loc": ("query", name), "msg": UNKNOWN_QUERY, "type": "extra_forbidden"}
                for name in unknown
            ]
        )


async def refuse_unknown_query(request: Request, _: CurrentRole) -> None:
    """422 for a query parameter the route does not take, as for an unknown body field: a
    misspelt ``invoice_date`` must not silently mean "today". After the key is checked, so that
    a caller without one learns nothing about the route."""
    _refuse_unknown(request)


KnownQueryOnly = Depends(refuse_unknown_query)

# What a route that takes no body accepts as "nothing": many clients send an empty object.
_NO_CONTENT = frozenset({b"", b"{}", b"null"})


async def refuse_body(request: Request, _: CurrentRole) -> None:
    """422 for a body sent to a route that takes none (an empty object aside), as for an unknown
    field: whatever it meant to say is not read. After the key is checked."""
    body = b"".join((await request.body()).split())
    if body not in _NO_CONTENT:
        detail = "this route takes no body"
        raise ProblemError(
            422,
            detail,
            kind="validation",
            errors=[{"loc": ["body"], "msg": detail, "type": "extra_forbidden"}],
        )


NoBody = Depends(refuse_body)


# Pages ------------------------------------------------------------------------------------------
# A browser cannot send a Bearer key: pages also take the session cookie that POST /sign-in sets.
# JSON routes never do, so that no other site can make a signed-in browser change anything (CSRF).

SESSION_COOKIE = "offers_session"
session_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="The session that POST /sign-in sets; pages only.",
)


class SignInNeeded(Exception):
    """A browser asked for a page without a session that may open it: it is sent to sign in.

    ``forbidden``: it is signed in, but with a key whose role may not open the page."""

    def __init__(self, next_path: str, *, forbidden: str | None = None) -> None:
        super().__init__(forbidden or "sign in to open this page")
        self.next_path = next_path
        self.forbidden = forbidden


def wants_html(request: Request) -> bool:
    """A browser's navigation asks for HTML; API clients and scripts ask for anything else."""
    return "text/html" in request.headers.get("accept", "")


def _page_path(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def require_page_role(*allowed: Role) -> Callable[..., Awaitable[Role]]:
    """A page's guard: a Bearer key, or else the session cookie, of one of ``allowed`` (or admin).

    Without either, a browser is redirected to sign in and any other caller gets 401, as on the
    JSON routes; a role that may not open the page gets 403."""
    needed = " or ".join(allowed)

    async def guard(
        request: Request,
        services: ServicesDep,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        token: Annotated[str | None, Depends(session_cookie)],
    ) -> Role:
        if credentials is not None:
            role = services.keys.role_of(credentials.credentials)
            if role is None:
                raise ProblemError(
                    401, "the API key is not known", kind="unauthorized", headers=_CHALLENGE
                )
        else:
            role = services.sessions.role_of(token) if token else None
            if role is None:
                if wants_html(request):
                    raise SignInNeeded(_page_path(request))
                raise ProblemError(
                    401,
                    "send an API key as Authorization: Bearer <key>, or sign in at /sign-in",
                    kind="unauthorized",
                    headers=_CHALLENGE,
                )
        if not any(may_call(role, role_needed) for role_needed in allowed):
            detail = f"this page needs the {needed} role; the key has {role}"
            if credentials is None and wants_html(request):
                raise SignInNeeded(_page_path(request), forbidden=detail)
            raise ProblemError(403, detail, kind="forbidden")
        return role

    guard.__name__ = f"require_page_{'_or_'.join(allowed)}"
    return guard


# The OpenAPI entry of a page's redirect to sign in.
SIGN_IN_REDIRECT: dict[int | str, dict[str, Any]] = {
    303: {"description": "A browser without a session: on to `/sign-in?next=<this page>`."}
}
MarketingPage = Annotated[Role, Depends(require_page_role("marketing"))]
PreviewPage = Annotated[Role, Depends(require_page_role("renderer", "marketing"))]


# A page checks its query parameters as the JSON routes do, after its own sign-in: a browser
# without a session is still sent to sign in, and learns nothing about the page before.


async def refuse_unknown_page_query(request: Request) -> None:
    """For the sign-in and sign-out pages, which anyone may open."""
    _refuse_unknown(request)


async def refuse_unknown_marketing_page_query(request: Request, _: MarketingPage) -> None:
    _refuse_unknown(request)


async def refuse_unknown_preview_query(request: Request, _: PreviewPage) -> None:
    _refuse_unknown(request)


KnownPageQueryOnly = Depends(refuse_unknown_page_query)
KnownMarketingPageQueryOnly = Depends(refuse_unknown_marketing_page_query)
KnownPreviewQueryOnly = Depends(refuse_unknown_preview_query)
