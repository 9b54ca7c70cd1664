"""study: the vcr-study harness (search spaces, Ray Tune, Optuna, MLflow, the CLI)."""
