"""A running search on the driver: the searcher, its Optuna study, Ray Tune's run and its callbacks.

``driver.run_search`` puts it together: ``space_function`` (the define-by-run space), ``searcher``
(Ray's ``OptunaSearch`` without repeats, telling Optuna each ``outcome``), ``optuna_state`` (Ray's
private state, named once), ``sampler`` (the spec's sampler and searcher), ``resources`` (a trial's
bundles), ``ray_start`` (Ray on the driver), ``study`` (the journal on disk), ``early_stop`` (the
scheduler), ``live`` and ``progress`` (result files and the progress line as trials end), ``clean``
(checkpoints and cache holds a finished trial no longer needs; ``frontier clean``).
"""
