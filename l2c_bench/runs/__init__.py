"""One benchmark point, step by step; `l2c_bench.run` runs the steps in this order:

- `identity`: the run id and the row already stored under it (an ok row is not rerun);
- `prepare`: every setting checked before compute, the model loaded (`models.loading`), what the
  method needs made (a learned router, a calibration), the plan made once;
- `sample`: the samples, batch by batch (a shard of them: `shards`), with the uncached twin and
  the converged reference (`converged`) on the same seeds;
- `score`: timing, MACs, quality and the intervals of each number;
- `record`: the row written, then mirrored to W&B; `summary` prints it and the sweep's table.
"""
