"""Tools around the pipeline: `golf compare` (compare.py), `golf import` (importer.py) and
`golf inspect` (describe.py). No DVC stage runs them.
"""
