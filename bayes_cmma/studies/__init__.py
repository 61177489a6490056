"""Simulation studies: the paper's unit-level data-generating process (``simulate``), trial summaries
drawn from the Bayesian model itself (``synthetic``), study definitions and one replication
(``study``), and the resumable parallel runner (``runner``).
"""
