"""Results out: the tables written to an output folder (``outputs``), the figures (``plots``) and the
self-contained HTML report (``report``).
"""
