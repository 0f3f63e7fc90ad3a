"""After a search: ``rerun`` (a trial's plan again, in full, as a final model) and ``sweep`` (the
sharing sensitivity of a final model, to choose share groups)."""
