"""Orchestration: the run plan, the Prefect flow, the direct runner, the `realnet` command and the bench.

Imported before torch by every entry point (`realnet`, the Prefect deployments), so that OpenMP starts with
a short spin: a thread that reaches a barrier first spins for 3,000 rounds, then sleeps. libgomp's default
spins 100 times longer, and beside another CPU-bound process the spinning thread takes the core from the very
thread it waits for; a shorter spin makes the many small operations of a RealNet step wait for sleeping
threads on a quiet machine (BENCHMARKS.md, "A busy CPU"). A value the user set wins.
"""

import os

os.environ.setdefault("GOMP_SPINCOUNT", "3000")
