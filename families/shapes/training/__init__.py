"""Training code for the shipped models: recipes, a resumable loop, model cards, ``guidegraph train``.

Training runs once, on a developer machine (the shipped weights came from one lent GPU); CI runs only
the few-step ``--smoke`` variants. Data comes from :mod:`families.shapes.data` on the fly, from a seed.
"""
