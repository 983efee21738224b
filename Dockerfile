# The invoice offer API: `offers serve` on port 8000.
#
# Build:  docker build -t invoice-offers .
# Run:    docker run -p 8000:8000 -e OFFERS_API_KEYS=<a key of 16+ characters>:renderer \
#           -v "$PWD/data:/app/data" -v "$PWD/mlruns:/app/mlruns" invoice-offers
# The image holds code and catalog only. Features (data/feast) and models (mlruns/) come from the
# mounted folders, or from Redis, PostgreSQL and an MLflow server chosen by OFFERS_* variables.

# ---- build: install the package with the API's dependencies alone into a virtual environment ----
# `.[serve]`: what `offers serve` imports (FastAPI, uvicorn, Feast, LightGBM, mlflow-skinny for
# the registry), at the exact versions of constraints/serve.txt (`make lock`); no training-only
# or benchmark packages (full MLflow, matplotlib, psutil, pyspark, test tools).
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY constraints/serve.txt ./constraints/serve.txt
COPY pyproject.toml README.md ./
COPY core ./core
COPY features ./features
COPY training ./training
COPY serving ./serving
COPY pipelines ./pipelines
# A regular (not editable) install: the code lives in the venv, so /src is not needed at run time.
RUN pip install --upgrade pip setuptools wheel \
    && pip install -c constraints/serve.txt ".[serve]"

# ---- run: the venv, the catalog, a user without privileges ----
FROM python:3.11-slim AS runtime

# LightGBM needs the OpenMP runtime.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 offers \
    && useradd --system --uid 10001 --gid offers --home-dir /app --shell /usr/sbin/nologin offers

WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY catalog ./catalog
# Writable places for the embedded stores (SQLite online store, decision log, MLflow files).
RUN mkdir -p /app/data /app/mlruns && chown offers:offers /app/data /app/mlruns

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OFFERS_DATA_DIR=/app/data/raw \
    OFFERS_CATALOG=/app/catalog/offers.yaml \
    OFFERS_FEAST_DIR=/app/data/feast \
    OFFERS_DATABASE_URL=sqlite:////app/data/offers.db \
    MLFLOW_TRACKING_URI=sqlite:////app/mlruns/mlflow.db

USER offers
EXPOSE 8000

# No curl in the slim image: ask /health/live with Python itself (a non-2xx answer raises).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=4)"]

CMD ["offers", "serve", "--host", "0.0.0.0", "--port", "8000"]
