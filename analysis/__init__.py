"""Analysis: the paper's tables and figures regenerated from the results store (never W&B-only state).

    python -m analysis.tables  --results results --out analysis_out
    python -m analysis.pareto  --results results --out analysis_out
    python -m analysis.routers --out analysis_out [router files ...]
    python -m analysis.report  --results results --out analysis_out
"""
