"""What a fit answers: the dose-response function, elasticities and the ranking of candidate metrics
(``derived``), computed from posterior draws with named dims.
"""
