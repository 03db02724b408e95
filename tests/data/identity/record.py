"""Record the run id of every sweep point and every cache method's default point.

    python tests/data/identity/record.py   # writes run_ids.json beside this file

The ids are the results store's keys: a refactor of the config schema must leave every one as
it is, or existing stores would rerun their points (tests/test_identity.py reads this file).
Recorded at commit d3e0424 (the union CacheConfig schema); rerun only for a deliberate identity
change, and say so in the commit. (Table 3's points were renamed to their conf/point/ presets
with their ids unchanged when the per-method schemas came; the diffusers_zoo sweep's points and the
diffusers hook methods were added later (PyramidAttentionBroadcast and MagCache after them), and the
matched_quality sweep's points after those, then the points of easycache, seacache,
diffusers_seacache, lemica and hicache, then cachedit_dbcache's and the beyond_video sweep's,
then the zoo_2026 sweep's, every id before them unchanged; then, deliberately, the toy points of
PixArt, SD3 and Flux changed when trained toy weights shipped for them: records.store.TRAINED_TOYS.
FLUX.2's trained toy weights joined TRAINED_TOYS later and changed no recorded id: no recorded
point is a FLUX.2 toy point. Then, deliberately, Wan's toy points changed when its trained toy
weights shipped: the beyond_video sweep's 44 and zoo_2026's 36 Wan points, every other id unchanged.
Then, deliberately, zoo_2026's 180 points changed when its timed calls became 2 samples
(metrics.timing_batch), and FLUX.2's 36 points joined it, every other id unchanged.
LTX-Video's trained toy weights joined TRAINED_TOYS after and changed no recorded id: no recorded
point is an LTX-Video toy point.)
"""

import json
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[3]
OUT = Path(__file__).with_name("run_ids.json")


def points() -> list[list[str]]:
    """Override lists: each sweep's points as `run -m` composes them, then each method alone."""
    from l2c_bench.catalog import sweep_points
    from l2c_bench.config import register_configs

    register_configs()  # a glob over `cache` sees the registered schemas too (and excludes them)
    out = []
    for path in sorted((ROOT / "sweeps").glob("*.yaml")):
        out += [[*combo, f"+sweep={path.stem}"] for combo in sweep_points(path.stem)]
    methods = sorted(p.stem for p in (ROOT / "conf" / "cache").glob("*.yaml"))
    out += [[f"model={model}", f"cache={name}"] for model in ("dit", "uvit") for name in methods]
    return out


def main() -> None:
    from l2c_bench.config import register_configs
    from l2c_bench.records import run_id_for

    register_configs()
    ids = {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        for overrides in points():
            config = OmegaConf.to_container(compose("config", overrides=overrides), resolve=True)
            ids[" ".join(overrides)] = run_id_for(config)
    OUT.write_text(json.dumps(ids, indent=1, sort_keys=True) + "\n")
    print(f"{len(ids)} run ids -> {OUT}")


if __name__ == "__main__":
    main()
