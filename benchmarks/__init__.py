"""The application and the studies of this repository, by role (imports only point down this list):

* ``benchmarks/studies/``: performance and ablation studies (``python -m benchmarks.studies.NAME``); they
  write under ``runs/`` or, with ``--results``, ``benchmarks/results/``. Imported by nothing, not installed.
* ``benchmarks/analysis/``: the claims table with paired intervals over committed logs
  (``python -m benchmarks.analysis.claims``), and where study outputs go. Not installed.
* ``benchmarks/app/``: the application behind the ``ddrs`` command and ``certify_model``; installed under
  the import name ``ddrs_app`` (``from ddrs_app import certify_model``). It imports only the library
  packages (``certify``, ``manifolds``, ``ddrs``), never the analysis or the studies.
"""
