"""Training stage: training sets, LightGBM models, evaluation and the MLflow registry."""
