"""A Tune trainable for tests/test_trial_placement.py, in a module Ray's workers can import
(``tests.placement_task``; a test module is imported by pytest under its bare name, which a
worker cannot import)."""

from __future__ import annotations

from ray import tune


def report_placement(config: dict) -> None:
    """Report the strategy and the number of bundles of the placement group Tune gave this trial,
    and the trial's ``actors`` flag."""
    from ray.util import get_current_placement_group, placement_group_table

    table = placement_group_table(get_current_placement_group())
    tune.report({"strategy": table["strategy"], "bundles": len(table["bundles"]), "actors": config["actors"]})
