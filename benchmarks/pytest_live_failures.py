"""A pytest plugin for runs inside a time box (benchmarks/gpu_check.sh): each failure's report
is printed when it happens, so a run killed by ``timeout`` still says what failed and why.

    python -m pytest -p benchmarks.pytest_live_failures ...
"""


def pytest_runtest_logreport(report):
    if report.failed:
        print(f"\nFAILED {report.nodeid} ({report.when})\n{report.longreprtext[-4000:]}\n",
              flush=True)
