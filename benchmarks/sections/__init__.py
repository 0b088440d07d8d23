"""The sections of make bench, one module each, registered in benchmarks/run.py's ``SECTIONS`` (their order is the
order they run and print in). A section module has

* ``run(bench, results)``: logs what it measures (``harness.log``), measures (each measurement a
  ``bench.child(...)`` process) and returns what goes into results.json under its name; ``results`` holds the
  sections that ran before it (throughput reads and refines ``ceiling``);
* ``render(result, results)``: its part of the printed report (``report.table`` and friends);
* optionally ``prepare(bench)``: the data it needs (benchmarks/datasets.py), built for every chosen section
  before the first measurement, so a missing file stops the run before any time is spent.
"""
