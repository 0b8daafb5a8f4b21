"""Performance and ablation studies, one script each (``python -m benchmarks.studies.NAME --help``); each
writes a CSV and a plot under ``runs/NAME/`` (``--results``: ``benchmarks/results/``). Imported by nothing."""
