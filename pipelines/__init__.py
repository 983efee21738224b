"""The jobs ML engineers run: simulate, features, retrain, invoice runs, reports."""
