"""Course tooling that no notebook imports: benchmarks, the course runner, browser checks, screenshots.

Run from the repository root (it is not installed with ``helpers``):

    python -m tools.run_course [NN ...]      # execute the notebooks headless (``make run``)
    python -m tools.bench <name>             # one benchmark, its headline last
    python -m tools.bench.gpu_tools          # perf_analyzer vs the fallback generator (GPU)
    python -m tools.bench.gpu_bundle         # pack what ``bench gpu`` needs on an offline GPU machine
    python -m tools.screenshots              # the README's pictures (``make screenshots``)

It builds on ``helpers``; ``helpers`` never imports it.
"""
