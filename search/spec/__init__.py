"""The spec: its schema, the search space, the checks the schema cannot make, and the plan of an assignment.

``schema`` (pydantic models) < ``space`` (the space's grammar) < ``to_plan`` (an assignment's plan) <
``problems`` (what the schema cannot see) < ``load`` (``load_spec``/``parse_spec``: all of them in
order) < ``check`` (``frontier check``: the files and the machine too); ``constraints`` reads the
spec's ``select``. No module imports one to its right.
"""
