"""A run's results: ``trials.csv`` rows, ``front.json``, the files, and ``frontier front``'s table and page.

``rows`` (one row per finished trial) and ``summary`` (the front, its hypervolume) < ``files``
(written and read back) < ``format`` (how numbers read) < ``report`` (the terminal table) <
``report_page`` (the HTML page); ``front`` is the Pareto and hypervolume arithmetic under all of them.
"""
