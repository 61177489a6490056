"""Data in: trial tables (validated :class:`~bayes_cmma.inputs.data.TrialData`) and unit-level logs
summarised to trial tables, on pandas or Dask.

``data`` reads and checks the trial and covariance tables and cuts one metric's design;
``summarizer`` turns unit-level rows into those tables; ``dask_engine`` says where Dask work runs.
"""
