"""What every example script shares: run set-up, common flags, figures and metrics files.

Not part of the library: examples (and benchmarks) import it as ``scaffold`` with the
``examples/`` folder on ``sys.path`` (where Python puts it when a script there is run).
"""
