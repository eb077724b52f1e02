"""Studies: what runs many jobs — presets (one resolver), the grid, scenarios, recipes, sweeps.

A study is built from jobs (:mod:`engine.jobs`) and never the other way round: ``engine.jobs``
does not import this package (a test enforces it).
"""
