"""Orchestration: the run plan, the Prefect flow, the direct runner, the `realnet` command and the bench.

Imported before torch by every entry point (`realnet`, the Prefect deployments), so that OpenMP starts with
a short spin: a thread that reaches a barrier first spins for 1,000 rounds, then sleeps. libgomp's default
spins far longer, and beside another CPU-bound process the spinning thread takes the core from the very
thread it waits for: stage 1 ran 4.7 times slower, against 2.2 times with the short spin, for the same
speed alone (BENCHMARKS.md, "A busy CPU"). A value the user set wins.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "1000")
