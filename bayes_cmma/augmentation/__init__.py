"""Causal data augmentation along a DAG (ADMGDA): the augmentation itself (``augment``), the
``admgda`` baseline (OLS on an augmented table), random SCMs (``scm``) and their evaluation
(``evaluate``).
"""
