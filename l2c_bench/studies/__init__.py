"""Studies that need compute (training, sampling); `analysis/` only reads the results store."""
