"""The ``offers`` command. Each command imports its stage lazily so ``--help`` stays fast."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(
    help="invoice-offers: the right offer on every telecom invoice, explained, within consent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
features_app = typer.Typer(help="The Feast feature repository in features/.", no_args_is_help=True)
events_app = typer.Typer(help="Offer events that flow back into training.", no_args_is_help=True)
experiments_app = typer.Typer(help="Offer experiments and their reports.", no_args_is_help=True)
consents_app = typer.Typer(
    help="Consent changes received through the API, in the online store.", no_args_is_help=True
)
app.add_typer(features_app, name="features")
app.add_typer(events_app, name="events")
app.add_typer(experiments_app, name="experiments")
app.add_typer(consents_app, name="consents")
customers_app = typer.Typer(help="One customer's data in this system.", no_args_is_help=True)
app.add_typer(customers_app, name="customers")
models_app = typer.Typer(
    help="The registered model versions, their aliases and their records.", no_args_is_help=True
)
app.add_typer(models_app, name="models")

console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    # One line, however long: a path or a value broken over two lines cannot be copied.
    console.print(
        f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False, soft_wrap=True
    )
    return typer.Exit(code=code)


DataOption = Annotated[
    Path | None,
    typer.Option("--data", help="Folder of the input tables (default OFFERS_DATA_DIR)."),
]


@app.command()
def simulate(
    customers: Annotated[int, typer.Option(min=1, help="How many customers.")] = 200_000,
    months: Annotated[int, typer.Option(min=3, max=120, help="Months of history.")] = 24,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same world.")] = 7,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default OFFERS_DATA_DIR).")
    ] = None,
    end_month: Annotated[str, typer.Option(help="Last simulated month, YYYY-MM.")] = "2026-11",
    behaviour: Annotated[
        str,
        typer.Option(
            help="What drives acceptance: price (saving and plan fit), habit (inertia) or "
            "needs (roaming, payment trouble, life stage); coefficients vary with the seed."
        ),
    ] = "price",
) -> None:
    """Write a simulated operator's tables (docs/data-contract.md) and its survey answers."""
    from core.catalog import CatalogError, load_catalog
    from core.settings import get_settings
    from pipelines.simulation.behaviour import PROFILES
    from pipelines.simulation.world import simulate as run_simulation

    if behaviour not in PROFILES:
        known = ", ".join(sorted(PROFILES))
        raise _fail(f"--behaviour {behaviour!r}: must be one of {known}", code=2)
    try:
        last = dt.date.fromisoformat(end_month + "-01")
    except ValueError as error:
        raise _fail(f"--end-month {end_month!r} is not YYYY-MM", code=2) from error
    settings = get_settings()
    try:
        catalog = load_catalog(settings.catalog)
    except (CatalogError, ValueError) as error:
        raise _fail(str(error)) from error
    target = out or settings.data_dir
    try:
        summary = run_simulation(
            customers=customers,
            months=months,
            seed=seed,
            out=target,
            catalog=catalog,
            end_month=last,
            behaviour=behaviour,
        )
    except ValueError as error:
        raise _fail(str(error)) from error
    from features.materialize import mark_new_history

    # A new world's history replaces the old one's: an incremental materialize would keep the
    # old world's values for every row dated before its last end. The next features build over
    # these tables passes it on as a whole reload.
    mark_new_history(target, f"a new world was simulated into {target}")
    console.print(summary.describe())


@app.command()
def validate(data: DataOption = None) -> None:
    """Check the input tables and the catalog against docs/data-contract.md."""
    from core.catalog import CatalogError, load_catalog
    from core.settings import get_settings
    from core.validation import ContractError, validate_tables

    settings = get_settings()
    folder = data or settings.data_dir
    try:
        catalog = load_catalog(settings.catalog)
        report = validate_tables(folder, catalog)
    except (CatalogError, ContractError) as error:
        raise _fail(str(error)) from error
    console.print(report.describe())


@features_app.command("build")
def features_build(data: DataOption = None) -> None:
    """Build the feature tables (monthly snapshots) from the input tables."""
    from features.pipeline import build_features

    try:
        paths = build_features(data_dir=data)
    except ValueError as error:
        raise _fail(str(error)) from error
    folder = next(iter(paths.values())).parent if paths else "-"
    console.print(f"{len(paths)} feature tables written to {folder}")


@features_app.command("apply")
def features_apply() -> None:
    """Register entities, sources, feature views and services with Feast; when a view's features
    changed, the next materialize reloads every view from the beginning."""
    from core.settings import get_settings
    from features.materialize import whole_reload_requested
    from features.store import apply_repository

    console.print("registered: " + ", ".join(apply_repository()))
    reload = whole_reload_requested(get_settings())
    if reload is not None:
        console.print(
            f"the next `offers features materialize` reloads every view whole: {reload}",
            markup=False,
            highlight=False,
        )


@features_app.command("materialize")
def features_materialize(
    end: Annotated[
        str | None, typer.Option(help="Materialize up to this UTC date or time (default: now).")
    ] = None,
    data: DataOption = None,
    whole: Annotated[
        bool,
        typer.Option(
            "--whole",
            help="Reload every view from the beginning: after the tables' history changed "
            "(corrected source data), not only grew.",
        ),
    ] = False,
) -> None:
    """Load the newest feature values into the online store, incrementally (from the beginning
    with --whole, and once after a new world was simulated or a customer erased); then apply the
    consent changes received through the API again (`offers consents sync`)."""
    from core.settings import get_settings
    from features.store import materialize
    from pipelines.consent_sync import sync_after_materialize

    try:
        end_time = dt.datetime.fromisoformat(end) if end else None
    except ValueError as error:
        raise _fail(f"--end {end!r} is not an ISO date or time", code=2) from error
    try:
        report = materialize(end=end_time, whole=whole)
    except ValueError as error:  # no views registered, a feature table missing: what to run
        raise _fail(str(error)) from error
    console.print(report.describe())
    try:
        synced = sync_after_materialize(get_settings(), data)
    except ValueError as error:
        raise _fail(
            f"materialized, but the consent changes received through the API were not applied "
            f"again: {error}; fix it and run `offers consents sync`"
        ) from error
    console.print(synced, markup=False, highlight=False)


@app.command()
def train(
    data: DataOption = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Train and register new versions even when data, settings and code are unchanged.",
        ),
    ] = False,
) -> None:
    """Train both models, evaluate against baselines, log to MLflow and register versions.

    A model whose data, training settings and code are unchanged is kept (the output says which
    of them changed otherwise); --force trains anyway."""
    from core.catalog import CatalogError, load_catalog
    from core.contract import OFFER_EVENTS
    from core.settings import get_settings
    from core.tables import read_table
    from pipelines.evaluation_oracle import eligibility_filter
    from training.train import train_models

    settings = get_settings()
    folder = data or settings.data_dir
    try:
        catalog = load_catalog(settings.catalog)
        # Off-policy value is estimated over the offers the decision engine would allow.
        candidates = eligibility_filter(catalog, read_table(folder, OFFER_EVENTS))
        result = train_models(data_dir=folder, candidate_filter=candidates, force=force)
    except (CatalogError, ValueError) as error:
        raise _fail(str(error)) from error
    console.print(result.describe())


ModelOption = Annotated[
    str | None, typer.Option("--model", help="offer-ranker or churn-risk (default: both).")
]
ByOption = Annotated[
    str | None,
    typer.Option("--by", help="Who it is recorded as done by (default: the login name)."),
]


@app.command()
def promote(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="offer-ranker or churn-risk (default: both; with --version, the ranker).",
        ),
    ] = None,
    version: Annotated[
        int | None,
        typer.Option(
            "--version",
            min=1,
            help="Promote this version (of --model, default offer-ranker) instead of the newest, "
            "through the same checks.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="With --version: skip the checks; needs --reason, and is recorded."
        ),
    ] = False,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why; recorded on the promoted version.")
    ] = None,
    by: ByOption = None,
) -> None:
    """Move the `champion` alias to the newest version when it beats the champion, or to
    --version N when it passes the same checks; `previous_champion` keeps the one it leaves."""
    from training.registry import RANKER_MODEL, UnknownVersion, promote_models, promote_version

    if force and version is None:
        raise _fail("--force promotes a chosen version: give --version N", code=2)
    if force and not (reason or "").strip():
        raise _fail("--force needs --reason TEXT: a forced promotion is recorded with why", code=2)
    if version is None:
        try:
            decisions = promote_models(only=model, by=by, reason=reason)
        except ValueError as error:
            raise _fail(str(error)) from error
        for decision in decisions:
            console.print(decision.describe())
        return
    name = model or RANKER_MODEL
    try:
        decision = promote_version(name, str(version), force=force, reason=reason, by=by)
    except (UnknownVersion, ValueError) as error:  # ModelInputsMismatch is a ValueError
        raise _fail(str(error)) from error
    if not decision.promoted and not decision.already_champion:
        raise _fail(f"{name}: version {version} not promoted: {decision.reason}")
    console.print(decision.describe())
    if decision.promoted and decision.champion_version is not None:
        console.print(
            f"{name}: previous_champion is version {decision.champion_version}; "
            f"`offers rollback --model {name}` goes back to it"
        )


@app.command()
def rollback(
    model: ModelOption = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why; recorded on the version champion again.")
    ] = None,
    by: ByOption = None,
) -> None:
    """Move `champion` back to `previous_champion`, and `previous_champion` to the version it
    leaves (a second rollback undoes the first). Every API worker follows within
    OFFERS_MODEL_POLL_SECONDS."""
    from training.registry import rollback_models

    try:
        rollbacks = rollback_models(only=model, by=by, reason=reason)
    except ValueError as error:
        raise _fail(str(error)) from error
    for done in rollbacks:
        console.print(done.describe())


@models_app.command("list")
def models_list(
    model: ModelOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (one object per model) instead.")
    ] = False,
) -> None:
    """Each version: aliases, primary metric, served-policy value, training window, when it was
    registered, and its promotion and rollback records."""
    from rich.table import Table

    from training.registry import MODEL_NAMES, PRIMARY_METRIC, summarize_versions

    names = MODEL_NAMES if model is None else (model,)
    try:
        summaries = {name: summarize_versions(name) for name in names}
    except ValueError as error:
        raise _fail(str(error)) from error
    # The listing is the command's result, so it goes to stdout (scripts read the JSON there).
    if as_json:
        listing = {
            name: {
                "primary_metric": PRIMARY_METRIC[name],
                "versions": [summary.as_dict() for summary in found],
            }
            for name, found in summaries.items()
        }
        typer.echo(json.dumps(listing, indent=2))
        return
    out = Console()
    for name, found in summaries.items():
        if not found:
            out.print(f"{name}: no registered versions")
            continue
        table = Table(title=name, title_justify="left")
        for column in (
            "version",
            "aliases",
            PRIMARY_METRIC[name],
            "served value",
            "train window",
            "validation window",
            "created (UTC)",
            "promotion",
            "rollback",
        ):
            # Names and figures stay whole (a figure cut to "0.92…" says nothing); the rest folds
            # to the terminal's width, never cut off.
            whole = column in ("version", "aliases", PRIMARY_METRIC[name], "served value")
            table.add_column(column, no_wrap=whole, overflow="ellipsis" if whole else "fold")
        for summary in found:
            cells = (
                summary.version,
                ", ".join(summary.aliases),
                _figure(summary.metric_value),
                _figure(summary.served_value),
                _window(summary.train_window),
                _window(summary.validation_window),
                _moment(summary.created_at),
                _promotion_text(summary.promotion),
                _rollback_text(summary.rollback),
            )
            # Reasons are free text: shown as written, never read as rich markup.
            table.add_row(*(escape(cell) for cell in cells))
        out.print(table)


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _window(window: str | None) -> str:
    # "2026-01-01..2026-10-01" has no space to wrap at; a narrow terminal would cut it.
    return "–" if window is None else window.replace("..", " to ")


def _moment(iso: str | None) -> str:
    return "–" if iso is None else iso.replace("T", " ").removesuffix("+00:00")


def _promotion_text(record: dict[str, object] | None) -> str:
    if record is None:
        return "–"
    origin = f" from {record['from']}" if record.get("from") else ""
    head = f"{_moment(str(record['at']))} by {record['by']}{origin}"
    return f"FORCED {head}: {record['reason']}" if record.get("forced") else head


def _rollback_text(record: dict[str, object] | None) -> str:
    if record is None:
        return "–"
    why = f": {record['reason']}" if record.get("reason") else ""
    return f"{_moment(str(record['at']))} from {record['from']} by {record['by']}{why}"


@app.command()
def monitor(
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="First day (YYYY-MM-DD, UTC) of the decisions to look at; default "
            "OFFERS_MONITOR_WINDOW_DAYS (28) days back.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Input drift, prediction drift and degraded answers of the logged decisions.

    Input drift: the PSI of each model input of the recent model decisions
    against the champion ranker's training window; ok, warn, alert at
    OFFERS_MONITOR_PSI_WARN (0.1) and OFFERS_MONITOR_PSI_ALERT (0.25).
    Age and satisfaction are compared in bands, never as values.

    Prediction drift: per ISO week, the predicted against the observed
    acceptance of the offers the model placed first, with a 95 % interval;
    marked beyond OFFERS_MONITOR_CALIBRATION_GAP (0.05).

    Degraded answers: their share, marked beyond
    OFFERS_MONITOR_DEGRADED_SHARE (0.05).

    One line of advice when a threshold is crossed.
    """
    from core.settings import get_settings
    from pipelines.monitoring import MonitorUnavailable, print_report, run_monitor

    first_day = None
    if since is not None:
        try:
            first_day = dt.date.fromisoformat(since)
        except ValueError as error:
            raise _fail(f"--since {since!r} is not a date (YYYY-MM-DD)", code=2) from error
    now = dt.datetime.now(dt.UTC)
    if first_day is not None and first_day > now.date():
        raise _fail(f"--since {since} is after today ({now.date().isoformat()})", code=2)
    try:
        report = run_monitor(get_settings(), first_day, now)
    except MonitorUnavailable as error:
        raise _fail(str(error)) from error
    # The report is the command's result: stdout (scripts read the JSON there).
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    print_report(report, Console())


@app.command()
def retrain(data: DataOption = None) -> None:
    """Validate → build features → materialize → train → evaluate → promote."""
    from pipelines.retrain import PipelineStepError, run_retrain

    try:
        result = run_retrain(data_dir=data)
    except PipelineStepError as error:
        raise _fail(str(error)) from error
    console.print(result.describe())


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
) -> None:
    """Run the invoice offer API. It prints JSON lines on stderr (decisions, failures), with no
    customer or invoice id in them; uvicorn's access log is off, since paths carry ids."""
    import uvicorn

    from core.settings import Settings
    from serving.log_lines import uvicorn_log_config

    # A key the app would refuse at start-up is said here in one line, before any worker starts,
    # not as a start-up traceback in the server's log.
    try:
        Settings().api_key_roles()
    except ValueError as error:
        raise _fail(str(error)) from error
    # MLflow otherwise gives its loggers a plain-text handler of their own when imported; left
    # alone, they write through the root's JSON lines like every other library.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        log_config=uvicorn_log_config("WARNING"),
        access_log=False,
    )


@app.command("invoice-run")
def invoice_run(
    invoice_date: Annotated[str, typer.Option(help="Billing date, YYYY-MM-DD.")],
    out: Annotated[Path, typer.Option(help="Parquet file of decisions to write.")],
    engine: Annotated[str, typer.Option(help="local or spark.")] = "local",
    locale: Annotated[str, typer.Option(help="sv or en.")] = "sv",
    max_offers: Annotated[int, typer.Option(min=0, max=10, help="Offers per invoice.")] = 3,
    no_log: Annotated[
        bool,
        typer.Option(
            "--no-log",
            help="A what-if run: the champion decides every invoice afresh, without "
            "experiments, and nothing is written to the decision log.",
        ),
    ] = False,
    slice_invoices: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Invoices decided and written at a time; a rerun after an interruption skips "
            "the finished slices (default: OFFERS_INVOICE_RUN_SLICE_INVOICES, 50,000).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes deciding slices at once, the local engine only; in a logged run "
            "each writes its slices' decisions to the log.",
        ),
    ] = 1,
) -> None:
    """Decide offers for every customer billed on a date (same decisions as the API).

    The decisions are real decisions: made by the API's own service, experiments applied,
    written to the decision log (OFFERS_DATABASE_URL) in bulk, so POST /v1/offers replays them
    and events for them are accepted. An invoice the log already holds is replayed, so a rerun
    duplicates nothing. A call to a PostgreSQL log may take up to 120 s here, not the API's
    OFFERS_DATABASE_TIMEOUT_MS. The features are the newest known when the run is made, as the API's
    online store holds them, with the usage moved back to the invoices' billing period.

    The invoices are decided in slices, each written atomically beside --out; run the same
    command again after an interruption and the finished slices are not decided again. With
    --engine spark each partition writes its decisions to the log over connections of its own,
    so the executors must reach OFFERS_DATABASE_URL.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from pipelines.invoice_run import run_invoice_run

    if engine not in {"local", "spark"}:
        raise _fail(f"--engine {engine!r}: must be local or spark", code=2)
    if locale not in {"sv", "en"}:
        raise _fail(f"--locale {locale!r}: must be sv or en", code=2)
    try:
        day = dt.date.fromisoformat(invoice_date)
    except ValueError as error:
        raise _fail(f"--invoice-date {invoice_date!r} is not an ISO date", code=2) from error
    try:
        summary = run_invoice_run(
            invoice_date=day,
            out=out,
            engine=engine,
            locale="en" if locale == "en" else "sv",
            max_offers=max_offers,
            log_decisions=not no_log,
            slice_invoices=slice_invoices,
            workers=workers,
        )
    except ValueError as error:
        raise _fail(str(error)) from error
    except SQLAlchemyError as error:
        raise _fail(
            f"the decision log database is unavailable ({type(error).__name__}); no output was "
            "written. Run again: the decisions already logged are replayed, not made twice"
        ) from error
    console.print(summary)


@app.command()
def evaluate(
    month: Annotated[
        str | None, typer.Option(help="Month of logged decisions, YYYY-MM (default: the newest).")
    ] = None,
    sample: Annotated[int, typer.Option(min=1, help="Logged decisions to replay at most.")] = 3_000,
    out: Annotated[Path | None, typer.Option(help="Write the report as JSON here too.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling and bootstrap seed.")] = 0,
    what_if: Annotated[
        list[str] | None,
        typer.Option(
            "--what-if",
            help="SETTING=V1,V2,...: decide the model policy again with one setting of the "
            "objective at each value (weight_revenue, weight_retention, weight_customer, "
            "accepted_offer_value_sek, horizon_months, churn_reduction, min_acceptance, "
            "min_value_sek, upgrade_usage_share, value_tolerance); repeat for several settings.",
        ),
    ] = None,
) -> None:
    """Replay a month's logged decisions with the served engine and baselines; report each."""
    from core.settings import get_settings
    from pipelines.invoice_run import load_champions
    from pipelines.policy_evaluation import evaluate_served_policies, what_if_objectives
    from serving.decision.arbitration import Objective

    try:
        first = None if month is None else dt.date.fromisoformat(month + "-01")
    except ValueError as error:
        raise _fail(f"--month {month!r} is not YYYY-MM", code=2) from error
    changes = _what_if_changes(what_if or [])
    try:
        # Before the replay: a setting or value the objective refuses costs no minutes of work.
        what_if_objectives(Objective.from_settings(get_settings()), changes)
    except ValueError as error:
        raise _fail(f"--what-if {error}", code=2) from error
    if out is not None:
        # Before the replay, not after it: minutes of work are not lost to a folder it cannot use.
        _check_writable(out)
    try:
        models = load_champions(get_settings())
        if not models.available:
            console.print(
                "[bold yellow]warning:[/] no champion model yet: the model policy below is "
                "decided by rules, and no rule is lifted (train and promote a model first)",
                markup=True,
                highlight=False,
                soft_wrap=True,
            )
        report = evaluate_served_policies(
            month=first, sample=sample, seed=seed, models=models, what_if=changes
        )
    except (ValueError, FileNotFoundError) as error:
        raise _fail(str(error)) from error
    # The report on standard output (warnings above went to standard error), each table row on
    # one line whatever the terminal's width: `offers evaluate > report.md` keeps its tables.
    Console(soft_wrap=True).print(escape(report.markdown()), highlight=False)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report.as_dict(), indent=2, default=str) + "\n")


@events_app.command("export")
def events_export(
    out: Annotated[Path | None, typer.Option(help="offer_events Parquet to write.")] = None,
) -> None:
    """Append logged decisions and their events to offer_events for the next retraining."""
    from serving.decision_log.export import OUTCOME_WINDOW, export_offer_events

    if out is not None:
        # Whether there is anything to export or not: a path that cannot be used is said at once.
        _check_writable(out)

    export = export_offer_events(out=out)
    console.print(f"{export.exported} offer events exported")
    if export.waiting:
        console.print(
            f"{export.waiting} shown offers wait for their outcome: exported with their decision "
            f"{OUTCOME_WINDOW.days} days after it was made (until then, training would read "
            "them as not accepted)"
        )


def _check_writable(out: Path) -> None:
    """Refuse an output file that cannot be written, before any work is done for it."""
    import tempfile

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".offers-probe-"):
            pass
    except OSError as error:
        raise _fail(f"--out {out}: cannot write there ({error.strerror})") from error
    if out.is_dir():
        raise _fail(f"--out {out}: is a folder, not a file")


def _what_if_changes(texts: list[str]) -> dict[str, list[float]]:
    """``SETTING=V1,V2`` options as values per setting; a setting given twice takes both lists."""
    changes: dict[str, list[float]] = {}
    for text in texts:
        setting, equals, values = text.partition("=")
        if not equals or not setting.strip() or not values.strip():
            raise _fail(f"--what-if {text!r} is not SETTING=V1,V2,...", code=2)
        numbers = []
        for value in values.split(","):
            try:
                number = float(value)
            except ValueError:
                raise _fail(
                    f"--what-if {text!r}: {value.strip()!r} is not a number", code=2
                ) from None
            if not math.isfinite(number):
                raise _fail(f"--what-if {text!r}: {value.strip()!r} is not a finite number", code=2)
            numbers.append(number)
        changes.setdefault(setting.strip(), []).extend(numbers)
    return changes


def _variant(text: str) -> dict[str, object]:
    name, _, rest = text.partition(":")
    weight, _, policy = rest.partition(":")
    try:
        return {"name": name, "weight": float(weight), "policy": policy}
    except ValueError as error:
        raise typer.BadParameter(f"{text!r} is not NAME:WEIGHT:POLICY") from error


@experiments_app.command("create")
def experiments_create(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="JSON file holding the experiment as POST /v1/experiments takes it; the options "
            "below override its fields.",
        ),
    ] = None,
    key: Annotated[str | None, typer.Option(help="Unique key (A-Z a-z 0-9 . _ -).")] = None,
    description: Annotated[str | None, typer.Option(help="What it tests.")] = None,
    layer: Annotated[
        str | None,
        typer.Option(help="Layer (default 'default'); one experiment at a time per layer."),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            "--variant",
            help="NAME:WEIGHT:POLICY, once per variant (policy model, rules, non_personalised, "
            "holdout or model:<version>); weights sum to 1.",
        ),
    ] = None,
    start: Annotated[str | None, typer.Option(help="Start, ISO 8601 (UTC without a zone).")] = None,
    end: Annotated[str | None, typer.Option(help="End, ISO 8601.")] = None,
    control: Annotated[
        str | None,
        typer.Option(help="Variant to compare with (default: the first 'model' variant)."),
    ] = None,
    planned_customers: Annotated[
        int | None, typer.Option(help="Customers the experiment is designed to enrol.")
    ] = None,
) -> None:
    """Create an experiment, checked as POST /v1/experiments checks it (an overlap in its layer
    is refused naming the other experiment)."""
    from pipelines.experiment_commands import ExperimentRefused, create

    body: dict[str, object] = {}
    if file is not None:
        try:
            loaded = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise _fail(f"{file}: not a readable JSON file ({error})") from error
        if not isinstance(loaded, dict):
            raise _fail(f"{file}: the experiment must be a JSON object")
        body.update(loaded)
    flags = {
        "key": key,
        "description": description,
        "layer": layer,
        "start": start,
        "end": end,
        "control": control,
        "planned_customers": planned_customers,
        "variants": None if not variant else [_variant(text) for text in variant],
    }
    body.update({name: value for name, value in flags.items() if value is not None})
    try:
        created = create(body)
    except ExperimentRefused as error:
        raise _fail(str(error)) from error
    console.print(
        f"created {escape(created.key)} in layer {escape(created.layer)}: "
        f"{created.start:%Y-%m-%d %H:%M} – {created.end:%Y-%m-%d %H:%M} UTC, "
        + ", ".join(escape(f"{v.name} {v.weight:g} {v.policy}") for v in created.variants)
    )


@experiments_app.command("list")
def experiments_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead.")] = False,
) -> None:
    """All experiments, the first created first."""
    from pipelines.experiment_commands import experiments_table, listed
    from serving.experiments import json_ready

    experiments = listed()
    if as_json:
        typer.echo(json.dumps(json_ready(experiments), indent=2))
        return
    Console().print(experiments_table(experiments))


@experiments_app.command("stop")
def experiments_stop(key: str) -> None:
    """Stop an experiment now: no invoice is assigned to it from then on (every API worker
    within 5 s); its report stays."""
    from pipelines.experiment_commands import ExperimentRefused, stop

    try:
        stopped = stop(key)
    except KeyError as error:
        raise _fail(f"no experiment with key {key!r}") from error
    except ExperimentRefused as error:
        raise _fail(str(error)) from error
    assert stopped.stopped_at is not None
    console.print(f"{escape(key)} stopped at {stopped.stopped_at:%Y-%m-%d %H:%M:%S} UTC")


@experiments_app.command("report")
def experiments_report(
    key: str,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the JSON of GET /v1/experiments/KEY/report.")
    ] = False,
    proposed: Annotated[
        str | None,
        typer.Option(
            help="Also estimate a policy that was not run on the experiment's logged decisions "
            "(off-policy: IPS, SNIPS, doubly robust, effective sample size): model, rules, "
            "popularity or model:<version>. Reads the feature tables and the registry.",
        ),
    ] = None,
    resamples: Annotated[
        int, typer.Option(min=20, help="Bootstrap resamples of the off-policy intervals.")
    ] = 300,
    data: DataOption = None,
) -> None:
    """Print an experiment's report: per variant and customer, against the control, with the
    sample-ratio test, the minimum detectable effect and warnings; with --proposed, an
    off-policy estimate of a policy that was not run (in the JSON as `off_policy`)."""
    from core.settings import get_settings
    from pipelines.experiment_commands import off_policy_view, report, report_view
    from pipelines.experiment_off_policy import (
        ProposedPolicyError,
        check_proposed,
        estimate_proposed,
    )
    from serving.experiments import json_ready

    settings = get_settings()
    if data is not None:
        settings = settings.model_copy(update={"data_dir": data})
    estimate = None
    try:
        if proposed is not None:
            check_proposed(proposed)
        results = report(key, settings)
        if proposed is not None:
            estimate = estimate_proposed(key, proposed, settings, resamples=resamples)
    except KeyError as error:
        raise _fail(f"no experiment with key {key!r}") from error
    except ProposedPolicyError as error:
        raise _fail(str(error)) from error
    if as_json:
        body = json_ready(results)
        assert isinstance(body, dict)
        if estimate is not None:
            body["off_policy"] = estimate.as_dict()
        typer.echo(json.dumps(body, indent=2))
        return
    Console().print(report_view(results))
    if estimate is not None:
        Console().print(off_policy_view(estimate))


@experiments_app.command("simulate")
def experiments_simulate(
    key: str,
    cycles: Annotated[
        int, typer.Option(min=1, help="The simulated world's newest months to run it over.")
    ] = 1,
    seed: Annotated[int, typer.Option(help="Seed of the hidden behaviour's draws.")] = 0,
    data: DataOption = None,
) -> None:
    """Run an experiment on a simulated world: each cycle (a month) the engine decides that
    month's invoices under the customers' variants, the world's hidden behaviour answers as
    offer events, then the report. Decisions and events go to the configured decision log."""
    from core.settings import get_settings
    from pipelines.experiment_commands import report_view
    from pipelines.experiment_simulation import simulate_experiment

    settings = get_settings()
    if data is not None:
        settings = settings.model_copy(update={"data_dir": data})
    try:
        run = simulate_experiment(key, cycles, settings, seed=seed)
    except KeyError as error:
        raise _fail(f"no experiment with key {key!r}") from error
    except ValueError as error:
        raise _fail(str(error)) from error
    console.print(
        f"{', '.join(run.months)}: {run.decisions} invoices decided, {run.enrolled} in the "
        f"experiment, {run.events} offer events stored"
    )
    Console().print(report_view(run.report))


@consents_app.command("sync")
def consents_sync(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            help="Parquet or CSV of consent answers with the consents table's columns "
            "(customer_id, purpose, granted, updated_at), recorded as changes first.",
        ),
    ] = None,
    data: DataOption = None,
) -> None:
    """Apply the consent changes received through the API on top of the online store: each
    that is the newest for its customer and purpose and newer than the consents table's."""
    from sqlalchemy.exc import SQLAlchemyError

    from core.settings import get_settings
    from pipelines.consent_sync import sync_consents
    from serving.decision_log import DecisionLog

    settings = get_settings()
    try:
        log = DecisionLog.from_settings(settings)
    except SQLAlchemyError as error:
        raise _fail(
            f"the decision log database does not answer ({type(error).__name__})"
        ) from error
    try:
        report = sync_consents(settings, log, file=file, data_dir=data)
    except ValueError as error:
        raise _fail(str(error)) from error
    finally:
        log.close()
    console.print(report.describe(), markup=False, highlight=False)


@app.command()
def bench(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            help="simulate, features, retrain, api, quality, experiment-report, invoice-run, "
            "invoice-run-million, soak (default: all but soak and invoice-run-million)."
        ),
    ] = None,
    quick: Annotated[bool, typer.Option(help="A smaller world, for a fast check.")] = False,
    minutes: Annotated[
        float | None,
        typer.Option(min=0.1, help="How long `soak` holds its load (default 30; --quick: 2)."),
    ] = None,
) -> None:
    """Run the benchmarks and write their figures to benchmarks/results/ (from the repository)."""
    import subprocess

    if not Path("benchmarks", "__main__.py").is_file():
        raise _fail(
            "the benchmarks are not installed here: run `offers bench` from the repository's "
            "root, where benchmarks/ is"
        )
    command = [sys.executable, "-m", "benchmarks", *(names or [])]
    if quick:
        command.append("--quick")
    if minutes is not None:
        command += ["--minutes", str(minutes)]
    raise typer.Exit(subprocess.run(command, check=False).returncode)


@customers_app.command("erase")
def erase_customer(
    customer_id: Annotated[str, typer.Argument(help="The customer to erase.")],
    yes: Annotated[
        bool, typer.Option("--yes", help="Erase without asking for confirmation.")
    ] = False,
) -> None:
    """Erase a customer (GDPR Art. 17): decisions, events and consent answers from the decision
    log, every value from the online store; keeps only counts, and says what it removed."""
    import sqlalchemy as sa

    from core.settings import get_settings
    from pipelines.consent_sync import ID_CONTROL_CHARACTERS, MAX_ID_LENGTH
    from pipelines.customer_erasure import erase_customer as erase

    if (
        not customer_id.strip()
        or len(customer_id) > MAX_ID_LENGTH
        or re.search(ID_CONTROL_CHARACTERS, customer_id)
    ):
        # No customer has such an id (the decision log's column holds 1–64 characters, none a
        # control character): erasing it would report success and erase nothing.
        raise _fail(
            f"{customer_id!r} is not a customer id: 1–{MAX_ID_LENGTH} characters, not blank, "
            "without control characters",
            code=2,
        )
    if not yes and not typer.confirm(
        "Erase this customer from the decision log and the online store? This cannot be undone"
    ):
        raise typer.Exit(code=1)
    try:
        erased = erase(get_settings(), customer_id)
    except (sa.exc.SQLAlchemyError, OSError, ValueError) as error:
        raise _fail(f"nothing was erased from the decision log: {type(error).__name__}") from error
    console.print(erased.describe())


def main() -> None:
    """The `offers` command: what a command could not read or write, and a database it could
    not use, are said in a line naming the file or the database, with exit code 1, not as a
    Python traceback; anything else keeps its traceback (a defect to report)."""
    import pyarrow as pa
    import sqlalchemy as sa

    try:
        app()
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        console.print(
            f"[bold red]error:[/] {escape(error.strerror or str(error))}{escape(where)}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except pa.ArrowException as error:
        console.print(
            f"[bold red]error:[/] a Parquet table could not be read or written "
            f"({type(error).__name__}): {escape(str(error))}",
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)
    except sa.exc.DatabaseError as error:
        database = error.orig.__class__.__name__ if error.orig is not None else "DatabaseError"
        said = (str(error.orig or error).strip().splitlines() or [""])[0]
        console.print(
            f"[bold red]error:[/] a database could not be used ({escape(database)})"
            + (f": {escape(said)}" if said else ""),
            markup=True,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
