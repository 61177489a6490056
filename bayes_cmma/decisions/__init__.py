"""What a fit answers, computed from posterior draws with named dims: the dose-response function,
elasticities and the ranking of candidate metrics (``derived``); the best composite north star for a
future trial (``northstar``); and the value of more trials (``more_trials``).
"""
