"""The driver: CLI, spec schema, Optuna space, Ray Tune runner, front, rerun."""
