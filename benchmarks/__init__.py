"""The benchmarks: each figure is a ratio of two things measured side by side in one run
(``make bench`` / ``python benchmarks/run.py``; see ``benchmarks/README.md``)."""
