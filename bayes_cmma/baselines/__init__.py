"""Frequentist estimators to compare with: the paper's OLS CMMA (``ols``), summary-level
errors-in-variables estimators (``eiv``) and the unit-level estimators of the paper's Table 1 (``iv``).
"""
