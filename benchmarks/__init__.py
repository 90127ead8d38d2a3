"""The benchmarks of issue 7: each figure is a ratio of two things measured side by side in one run
(``python benchmarks/run.py``; see ``benchmarks/README.md``)."""
