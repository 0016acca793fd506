"""``realnet bench`` and ``realnet devbench``: the stages' own steps timed on synthetic inputs, the profiler,
and the models of speed (roofline) and memory. Nothing here is imported by a run."""
