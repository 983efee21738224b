"""The invoice offer API: ``create_app`` is the factory ``offers serve`` runs.

Nothing happens at import. The lifespan opens the decision log, loads the catalog and the champion
models, opens the Feast online store and warms them up; requests only look them up. It then starts
the worker's champion follower (``serving.model_follower``), which keeps the models on the
registry's ``champion`` aliases, and stops it at shutdown.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.catalog import load_catalog
from core.settings import Settings, get_settings
from features.online import FeaturesNotApplied
from features.views import (
    CUSTOMER_BILLING,
    CUSTOMER_CONSENT,
    CUSTOMER_CONTRACT,
    CUSTOMER_PROFILE,
    CUSTOMER_USAGE,
)
from serving.api.deps import KnownQueryOnly, Services, SignInNeeded
from serving.api.errors import (
    PROBLEM_JSON,
    install_problem_handlers,
    problem_response,
    route_of,
)
from serving.api.routes import admin, consents, events, experiments, health, offers, pages, usage
from serving.api.schemas import MAX_BATCH_INVOICES
from serving.api.together import WaitingDecisions
from serving.auth import ApiKeys, SessionTokens, derived_session_secret
from serving.consents import ConsentService
from serving.decision.arbitration import Objective
from serving.decision.engine import decide
from serving.decision.inputs import DecisionRequest
from serving.decision_log import DecisionLog
from serving.decision_log.circuit import DecisionLogUnavailable
from serving.decision_log.repository import WARM_UP_ID
from serving.experiments import Experiments, contract_exits
from serving.feature_reader import OnlineFeatureSource, OpenFeatureStore, open_feast_source
from serving.log_lines import configure_logging
from serving.metrics import ApiMetrics
from serving.model_follower import ChampionFollower
from serving.monitoring import DriftMonitor, monitoring_report
from serving.offers import OffersService
from serving.offers_response import offers_answer_json
from serving.scoring_model import ModelHolder, ModelLoader
from serving.sign_in_throttle import SignInThrottle
from training.drift import MonitoringReport, profile_of

logger = logging.getLogger("serving.app")

DESCRIPTION = """\
Decides, for every telecom invoice, which plan or add-on to offer, explains why in the customer's
language, and summarises usage within the consent the customer gave.

Send an API key as `Authorization: Bearer <key>`. Roles: `renderer` (offers, events, usage
summaries, the invoice preview), `marketing` (experiments and their reports, the page at
`/experiments/{key}`, the invoice preview), `consent` (consent answers), `admin` (everything,
model reload). Health and metrics need no key. Browsers sign in to the pages at `/sign-in`: the
session cookie it sets opens pages only, never a JSON route.
Every error is `application/problem+json` (RFC 9457).
"""
FEATURE_RETRY_SECONDS = 10.0
BATCH_PATH = "/v1/offers/batch"


# Middleware -------------------------------------------------------------------------------------


class BodyTooLarge(StarletteHTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    """413 for a body over the limit: by its Content-Length up front, and by bytes as they arrive.

    FastAPI passes an HTTPException raised while reading the body on to the problem handlers.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        """``path_limits``: paths whose bodies may be larger, with their own limit."""
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.path_limits.get(scope["path"], self.max_bytes)
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    status = 413 if value.isdigit() else 400
                    detail = BodyTooLarge(limit).detail if status == 413 else "bad Content-Length"
                    await problem_response(status, detail)(scope, receive, send)
                    return
                break
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as error:  # raised where no handler caught it (a route without a body)
            if started:
                raise
            await problem_response(413, str(error.detail))(scope, receive, send)


class ServerTimingMiddleware:
    """``Server-Timing: app;dur=<ms>`` on every response, for clients and load generators."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                millis = (time.perf_counter() - started) * 1000.0
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", f"app;dur={millis:.3f}".encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, timed_send)


# Services ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connectors:
    """How the app reaches the feature store and the model registry; tests pass their own."""

    open_features: Callable[[Settings], OnlineFeatureSource] = open_feast_source
    model_loader: Callable[[Settings], ModelLoader] = ModelLoader.from_registry


class FeatureOpener:
    """Opens the feature store; after a failure, tries again at most every few seconds."""

    def __init__(
        self, settings: Settings, open_features: Callable[[Settings], OnlineFeatureSource]
    ) -> None:
        self._settings = settings
        self._open = open_features
        self._lock = threading.Lock()
        self._last_try = -FEATURE_RETRY_SECONDS
        # Why the store cannot be opened when retrying will not help, for readiness to say.
        self.problem: str | None = None

    def __call__(self) -> OnlineFeatureSource | None:
        now = time.monotonic()
        if now - self._last_try < FEATURE_RETRY_SECONDS or not self._lock.acquire(blocking=False):
            return None
        try:
            self._last_try = now
            opened = self._open(self._settings)
            self.problem = None
            return opened
        except FeaturesNotApplied as error:
            # Names of views and features only: no customer's data in it.
            self.problem = str(error)
            logger.error("feature store not opened: %s", self.problem)
            return None
        except Exception as error:
            self.problem = None  # this failure is another: readiness says the store is not open
            logger.error(
                "feature store not opened: offers are answered degraded",
                extra={"error": type(error).__name__},
            )
            return None
        finally:
            self._lock.release()


class _WarmUpSource:
    """A made-up adult customer with every consent and all-zero usage, for the warm-up decision."""

    def __init__(self, plan_id: str, month: dt.date) -> None:
        self._consent: dict[str, Any] = {name: 1 for name in CUSTOMER_CONSENT}
        self._consent.update(birth_year=1980, segment="consumer")
        self._account: dict[str, Any] = {
            name: 0 for name in (*CUSTOMER_USAGE, *CUSTOMER_CONTRACT, *CUSTOMER_BILLING)
        }
        self._account.update(
            current_plan_id=plan_id,
            usage_month_m1=month.replace(day=1).isoformat(),
            binding_end_date="",
            contract_ended_on="",
        )
        self._profile: dict[str, Any] = dict.fromkeys(CUSTOMER_PROFILE, 0)

    def read_consent(self, customer_id: str) -> dict[str, Any] | None:
        return dict(self._consent)

    def read_account(self, customer_id: str) -> dict[str, Any]:
        return dict(self._account)

    def read_account_and_profile(self, customer_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(self._account), dict(self._profile)


def warm_up(services: Services) -> None:
    """Decide once for a made-up customer, unlogged, so the first invoice does not pay first use.

    Nothing here may stop the service from starting: a failure is logged and the first requests
    pay the compilation instead.
    """
    try:
        services.log.warm_up()
    except Exception as error:
        logger.warning("decision log warm-up failed", extra={"error": type(error).__name__})
    if not services.catalog.plans:
        return
    today = dt.datetime.now(dt.UTC).date()
    request = DecisionRequest(WARM_UP_ID, WARM_UP_ID, today, "sv", 3)
    source = _WarmUpSource(services.catalog.plans[0].offer_id, today)
    try:
        decision = decide(
            request,
            source,
            services.catalog,
            policy="model",
            scorer=services.models.current.scorer,
            recently_declined=frozenset(),
        )
        offers_answer_json(decision, WARM_UP_ID)
        decision.to_log_dict()
    except Exception as error:  # a warm-up must never stop the service from starting
        logger.warning("warm-up decision failed", extra={"error": type(error).__name__})


def _drift_report(log: DecisionLog, models: ModelHolder, settings: Settings) -> MonitoringReport:
    """The monitoring report of the last ``OFFERS_MONITOR_WINDOW_DAYS``, against the serving
    ranker's input profile."""
    current = models.current  # read once: the pair of one moment
    scorer = current.scorer
    until = dt.datetime.now(dt.UTC)
    return monitoring_report(
        log,
        None if scorer is None else profile_of(scorer.ranker_metadata),
        current.model_version,
        settings,
        until - dt.timedelta(days=settings.monitor_window_days),
        until,
    )


def open_services(settings: Settings, connectors: Connectors) -> Services:
    """Open everything the routes use; a store or model that is down leaves the app degraded."""
    keys = ApiKeys(settings.api_key_roles())
    if not len(keys):
        logger.warning("OFFERS_API_KEYS is empty: every route that needs a key answers 401")
    sessions = SessionTokens(
        keys,
        settings.session_secret.get_secret_value() or derived_session_secret(settings.api_keys),
        max_age_seconds=round(settings.session_hours * 3600),
    )
    catalog = load_catalog(settings.catalog)
    log = DecisionLog.from_settings(settings)
    # Reports read churn from the contracts input table, whenever one is asked for.
    experiments_store = Experiments(log, exits=lambda: contract_exits(settings.data_dir))
    models = ModelHolder(connectors.model_loader(settings))
    models.start(experiments_store.challenger_policies(dt.datetime.now(dt.UTC)))
    reopen = FeatureOpener(settings, connectors.open_features)
    feature_store = OpenFeatureStore(reopen(), reopen, problem=lambda: reopen.problem)
    metrics = ApiMetrics()
    metrics.report_models(lambda: models.current)
    drift = DriftMonitor(
        lambda: _drift_report(log, models, settings),
        interval_seconds=settings.monitor_refresh_seconds,
    )
    metrics.registry.register(drift.collector())
    follower = ChampionFollower(
        models,
        metrics=metrics,
        challengers=lambda: experiments_store.challenger_policies(dt.datetime.now(dt.UTC)),
        interval_seconds=settings.model_poll_seconds,
    )
    offers_service = OffersService(
        catalog=catalog,
        models=models,
        log=log,
        experiments=experiments_store,
        feature_store=feature_store,
        metrics=metrics,
        render=offers_answer_json,
        decline_cap_invoices=settings.decline_cap_invoices,
        objective=Objective.from_settings(settings),
        invoice_date_window_days=(
            settings.invoice_date_past_days,
            settings.invoice_date_future_days,
        ),
    )
    services = Services(
        settings=settings,
        keys=keys,
        sessions=sessions,
        sign_ins=SignInThrottle(settings.sign_in_max_failures, settings.sign_in_window_seconds),
        catalog=catalog,
        metrics=metrics,
        models=models,
        log=log,
        experiments=experiments_store,
        feature_store=feature_store,
        offers=offers_service,
        consents=ConsentService(log=log, feature_store=feature_store, metrics=metrics),
        follower=follower,
        drift=drift,
        waiting=WaitingDecisions(offers_service),
    )
    warm_up(services)
    return services


# The app ----------------------------------------------------------------------------------------


async def _database_unavailable(request: Request, error: Exception) -> Response:
    # Nothing is answered that is not stored: without the database, say so and when to retry
    # (while the log's circuit is open: when it lets a call through again).
    retry_after = error.retry_after_s if isinstance(error, DecisionLogUnavailable) else 1
    logger.error(
        "decision log database unavailable",
        extra={"route": route_of(request), "error": type(error).__name__},
    )
    return problem_response(
        503,
        "the decision log database is unavailable; try again shortly",
        kind="decision-log-unavailable",
        headers={"Retry-After": str(retry_after)},
    )


def _problem_media_types(schema: dict[str, Any]) -> dict[str, Any]:
    # FastAPI documents every response under the route's media type (JSON, or HTML for the
    # pages); errors described by a model are answered as problem+json. An error page a page
    # answers itself is documented as an HTML string and stays as it is.
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for status, response in operation.get("responses", {}).items():
                if not status.isdigit() or int(status) < 400:
                    continue
                response["content"] = {
                    PROBLEM_JSON if "$ref" in body.get("schema", {}) else media: body
                    for media, body in (response.get("content") or {}).items()
                }
    return schema


def create_app(
    settings: Settings | None = None, *, connectors: Connectors | None = None
) -> FastAPI:
    """The API; its lifespan opens the stores and models (``connectors`` replaces how)."""
    resolved = settings or get_settings()
    connect = connectors or Connectors()
    configure_logging()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        services = open_services(resolved, connect)
        app.state.services = services
        # Feast, MLflow and the models leave hundreds of thousands of long-lived objects; frozen,
        # the collector stops walking them on every full collection, which showed up as tens of
        # milliseconds at the tail of request latency.
        gc.collect()
        gc.freeze()
        logger.info(
            "ready" if services.features is not None else "started without the feature store",
            extra={
                "model_version": services.models.current.model_version,
                "startup_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        services.follower.start()
        services.drift.start()
        try:
            yield
        finally:
            app.state.services = None
            services.close()

    # The API's description, and the pages that show it, only when the settings say so.
    docs_open = resolved.open_docs
    app = FastAPI(
        title="invoice-offers",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if docs_open else None,
        redoc_url="/redoc" if docs_open else None,
        openapi_url="/openapi.json" if docs_open else None,
        openapi_tags=[
            {"name": "offers", "description": "One decision per invoice."},
            {"name": "usage", "description": "What a customer used and paid for."},
            {"name": "events", "description": "What customers did with the offers."},
            {"name": "consents", "description": "Consent answers, applied at once."},
            {"name": "experiments", "description": "Offer experiments and their reports."},
            {"name": "admin", "description": "Model reload."},
            {"name": "pages", "description": "Pages for people: sign-in, the invoice preview."},
            {"name": "operations", "description": "Health and metrics."},
        ],
    )
    app.state.services = None
    install_problem_handlers(app)
    # Every failure to reach or use the log: lost connections, an exhausted pool (TimeoutError),
    # a broken driver state (InterfaceError), a corrupt SQLite file (DatabaseError).
    app.add_exception_handler(SQLAlchemyError, _database_unavailable)
    app.add_exception_handler(sqlite3.Error, _database_unavailable)
    app.add_exception_handler(SignInNeeded, pages.sign_in_needed)
    # A batch carries up to MAX_BATCH_INVOICES bodies of POST /v1/offers, each within the limit.
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=resolved.max_request_bytes,
        path_limits={BATCH_PATH: resolved.max_request_bytes * MAX_BATCH_INVOICES},
    )
    app.add_middleware(ServerTimingMiddleware)
    # A query parameter a route does not take is refused (422) like an unknown body field; health
    # and metrics accept whatever a probe or scraper adds. Pages check theirs route by route,
    # after the sign-in each needs: a browser without a session is sent to sign in first.
    for module in (offers, usage, events, consents, experiments, admin):
        app.include_router(module.router, dependencies=[KnownQueryOnly])
    app.include_router(experiments.page_router)
    app.include_router(pages.router)
    app.include_router(health.router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _problem_media_types(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                )
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
