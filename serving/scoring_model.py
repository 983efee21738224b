"""The engine's Scorer over the two registered LightGBM models, and the holder that swaps them.

Each model is a version's booster and calibrator read straight from the files its registered pyfunc
wraps (``training.served_model``): the request path skips the pyfunc layer and MLflow's schema
checks, yet serves the probability ``mlflow.pyfunc.load_model(...).predict`` returns.

Requests take ``holder.current`` once and keep that reference for their whole decision, so a reload
(a new object assigned in one step) never mixes two models within one answer. A model whose inputs
differ from what ``training.model_inputs`` builds is refused and the serving one is kept. Reloads
come from ``POST /v1/admin/reload`` and from each worker's ``ChampionFollower``
(``serving.model_follower``), which asks the registry where ``champion`` points.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.settings import Settings
from serving.decision.consent import MODEL_PREFIX
from training.model_inputs import CHURN_FEATURES, RANKER_FEATURES
from training.registry import (
    CHURN_MODEL,
    RANKER_MODEL,
    LoadedModel,
    ModelInputsMismatch,
    champion_version,
    load_champion,
    load_version,
)

logger = logging.getLogger("serving.models")


class ModelMismatch(Exception):
    """A model reads other inputs than this code builds; the message names the difference."""


class NoChampion(Exception):
    """No version carries the ``champion`` alias."""


class ModelLoadFailed(Exception):
    """The registry or a model file could not be read."""


def check_inputs(model: LoadedModel, expected: list[str]) -> None:
    """Refuse a model whose feature names (and their order) differ from ``expected``."""
    if list(model.feature_names) == list(expected):
        return
    missing = [name for name in expected if name not in model.feature_names]
    extra = [name for name in model.feature_names if name not in expected]
    what = []
    if missing:
        what.append(f"lacks {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if extra:
        what.append(f"has unknown {', '.join(extra[:5])}{' …' if len(extra) > 5 else ''}")
    if not what:
        what.append("has the same inputs in another order")
    raise ModelMismatch(f"{model.version} {' and '.join(what)}")


class LightGBMScorer:
    """Acceptance, contributions and churn risk on the request path: one thread, numpy in."""

    def __init__(self, ranker: LoadedModel, churn: LoadedModel) -> None:
        check_inputs(ranker, RANKER_FEATURES)
        check_inputs(churn, CHURN_FEATURES)
        self.model_version = ranker.version
        self.churn_model_version = churn.version
        self._ranker = ranker
        self.churn = churn

    @property
    def ranker_metadata(self) -> dict[str, Any]:
        """The ranker's model metadata (its calibrator, its training window's input profile)."""
        return self._ranker.metadata

    def acceptance(self, rows: np.ndarray) -> np.ndarray:
        return self._ranker.predict_proba(np.asarray(rows, dtype=np.float64))

    def contributions(self, rows: np.ndarray) -> np.ndarray:
        matrix = np.asarray(rows, dtype=np.float64)
        return np.asarray(
            self._ranker.booster.predict(matrix, pred_contrib=True, num_threads=1), dtype=float
        )

    def churn_risks(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.churn.predict_proba(np.asarray(rows, dtype=np.float64)), dtype=float)

    def segment_acceptance(self, segment: str) -> Mapping[str, float]:
        # Registered before the ranker kept these rates: empty, and the catalog order stands.
        rates = self._ranker.metadata.get("segment_offer_acceptance") or {}
        return dict(rates.get(segment) or {})

    def warm_up(self) -> None:
        """One prediction of each kind, so the first request does not pay for first use."""
        ranker_row = np.zeros((1, len(RANKER_FEATURES)))
        self.acceptance(ranker_row)
        self.contributions(ranker_row)
        self.churn_risks(np.zeros((1, len(CHURN_FEATURES))))


@dataclass(frozen=True)
class ServingModels:
    """The models one request decides with. ``scorer`` None: rules decide.

    ``unavailable`` is why a scorer that should be there is not (a load failed); None when there
    simply is no champion yet. ``loaded_at`` is when the scorer was loaded (Unix seconds).
    """

    scorer: LightGBMScorer | None = None
    unavailable: str | None = None
    challengers: Mapping[str, LightGBMScorer] = field(default_factory=dict)
    loaded_at: float | None = None

    @property
    def model_version(self) -> str | None:
        return self.scorer.model_version if self.scorer else None

    @property
    def churn_model_version(self) -> str | None:
        return self.scorer.churn_model_version if self.scorer else None

    def challenger(self, policy: str) -> LightGBMScorer | None:
        """The scorer of a ``model:<version>`` policy, when it was loaded."""
        return self.challengers.get(challenger_version(policy))


def challenger_version(policy: str) -> str:
    """``model:3`` and ``model:offer-ranker/3`` both name version 3 of the ranker."""
    version = policy.removeprefix(MODEL_PREFIX)
    return version.removeprefix(f"{RANKER_MODEL}/")


@dataclass(frozen=True)
class ModelLoader:
    """Reads models from the registry; tests pass their own functions.

    ``champion_version`` only asks where the alias points (``offer-ranker/3``, None without a
    champion) and raises when the registry does not answer; it loads nothing.
    """

    champion: Callable[[str], LoadedModel]
    version: Callable[[str, str], LoadedModel]
    champion_version: Callable[[str], str | None]

    @classmethod
    def from_registry(cls, settings: Settings) -> ModelLoader:
        return cls(
            champion=lambda name: load_champion(name, settings),
            version=lambda name, version: load_version(name, version, settings),
            champion_version=lambda name: champion_version(name, settings),
        )


def _load(load: Callable[[], LoadedModel], what: str) -> LoadedModel:
    try:
        return load()
    except ModelInputsMismatch as error:
        raise ModelMismatch(str(error)) from error
    except LookupError as error:
        raise NoChampion(f"{what} has no champion version") from error
    except Exception as error:
        logger.warning("model load failed", extra={"model": what, "error": type(error).__name__})
        raise ModelLoadFailed(f"{what} could not be loaded ({type(error).__name__})") from error


class ModelHolder:
    """The serving models; swapped as a whole, one reload at a time."""

    def __init__(self, loader: ModelLoader) -> None:
        self._loader = loader
        self._reload_lock = threading.Lock()
        self.current = ServingModels()

    def start(self, challengers: Iterable[str] = ()) -> ServingModels:
        """Load the champions at start; never raises: without them, rules decide."""
        try:
            self.reload(challengers)
        except NoChampion:
            logger.info("no champion model registered: rules decide")
        except (ModelMismatch, ModelLoadFailed) as error:
            logger.error("champion not served", extra={"reason": str(error)})
            self.current = ServingModels(unavailable="model_unavailable")
        return self.current

    def reload(self, challengers: Iterable[str] = ()) -> ServingModels:
        """Load the champions (and challenger versions) now and swap them in.

        Raises ModelMismatch, NoChampion or ModelLoadFailed; the serving models are then kept.
        """
        with self._reload_lock:
            ranker = _load(lambda: self._loader.champion(RANKER_MODEL), RANKER_MODEL)
            churn = _load(lambda: self._loader.champion(CHURN_MODEL), CHURN_MODEL)
            scorer = LightGBMScorer(ranker, churn)
            try:
                scorer.warm_up()
            except Exception as error:  # a pair that cannot predict must not replace one that can
                raise ModelLoadFailed(
                    f"{ranker.version} with {churn.version} failed a first prediction "
                    f"({type(error).__name__})"
                ) from error
            loaded = self._challengers(challengers, churn, {})
            self.current = ServingModels(scorer=scorer, challengers=loaded, loaded_at=time.time())
            logger.info(
                "models loaded",
                extra={
                    "model_version": scorer.model_version,
                    "churn_model_version": scorer.churn_model_version,
                    "challengers": sorted(loaded),
                },
            )
            return self.current

    def add_challengers(self, policies: Iterable[str]) -> ServingModels:
        """Load challenger versions next to the serving champion (for a new experiment)."""
        with self._reload_lock:
            current = self.current
            wanted = [p for p in policies if challenger_version(p) not in current.challengers]
            if current.scorer is None or not wanted:
                return current
            loaded = self._challengers(wanted, current.scorer.churn, current.challengers)
            self.current = ServingModels(
                scorer=current.scorer,
                unavailable=current.unavailable,
                challengers=loaded,
                loaded_at=current.loaded_at,
            )
            return self.current

    def champion_versions(self) -> tuple[str | None, str | None]:
        """Where the registry's ``champion`` aliases of the ranker and the churn model point now.

        An alias lookup only, no model is loaded. Raises ModelLoadFailed when the registry does
        not answer.
        """
        try:
            return (
                self._loader.champion_version(RANKER_MODEL),
                self._loader.champion_version(CHURN_MODEL),
            )
        except Exception as error:
            raise ModelLoadFailed(
                f"the registry did not answer ({type(error).__name__})"
            ) from error

    def _challengers(
        self, policies: Iterable[str], churn: LoadedModel, loaded: Mapping[str, LightGBMScorer]
    ) -> dict[str, LightGBMScorer]:
        # A challenger that cannot be served must not stop the champion from being served: its
        # experiment arm answers with the champion, marked degraded.
        result = dict(loaded)
        for policy in policies:
            version = challenger_version(policy)
            if version in result:
                continue
            try:
                ranker = _load(
                    lambda v=version: self._loader.version(RANKER_MODEL, v),  # type: ignore[misc]
                    f"{RANKER_MODEL}/{version}",
                )
                scorer = LightGBMScorer(ranker, churn)
                scorer.warm_up()
            except NoChampion:
                # No such version: a caller's mistake (an experiment naming it is refused 422),
                # not a fault of the service.
                logger.warning(
                    "challenger not served: no such version",
                    extra={"model": f"{RANKER_MODEL}/{version}"},
                )
                continue
            except (ModelMismatch, ModelLoadFailed) as error:
                logger.error("challenger not served", extra={"reason": str(error)})
                continue
            result[version] = scorer
        return result
