"""The Ray engine on a cluster of three Ray nodes on this machine (``ray.cluster_utils.Cluster``): a head with no
CPUs (it schedules nothing) and two worker nodes with one CPU each. The GQA pipeline writes the local engine's
corpus, and the run report names both worker nodes as writers of shards. Runs in its own process: a cluster
cannot share the test session's local Ray instance."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from polars.testing import assert_frame_equal

from tests.conftest import REPO
from virl_data.storage import corpus
from virl_data.engines.pipeline import load_pipeline, run_pipeline

pytest.importorskip("ray", reason="the Ray engine needs the [ray] extra")


def run_on_cluster(yaml: str, out: str) -> None:
    """In a fresh process: start the cluster, run the pipeline on it, write the report, stop the cluster."""
    import ray
    from ray.cluster_utils import Cluster

    from virl_data.engines.ray import LOCAL_SYSTEM_CONFIG, local_runtime_env, run_pipeline_ray

    small = {"object_store_memory": 96 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False,
                                                            "_system_config": LOCAL_SYSTEM_CONFIG, **small})
    workers = [cluster.add_node(num_cpus=1, resources={f"worker{i}": 1}, **small) for i in range(2)]
    try:
        ray.init(address=cluster.address, runtime_env=local_runtime_env(), logging_level="ERROR", log_to_driver=False)
        cluster.wait_for_nodes()
        report = run_pipeline_ray(yaml, out=out, block_size=3, intermediate=["mined"])
        nodes = {"head": ray.get_runtime_context().get_node_id(), "workers": [w.node_id for w in workers]}
        corpus.write_json({"nodes": nodes, "engine": report.config["engine"]}, Path(out) / "cluster.json")
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_gqa_on_a_head_and_two_worker_nodes(shared_data, tmp_path):  # 29 s at load 3, 83 s at load 12 (2 cores)
    yaml = REPO / "pipelines" / "gqa.yaml"
    local = run_pipeline(load_pipeline(yaml), out=tmp_path / "local")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    code = ("import sys; from tests.data.engines.test_ray_cluster import run_on_cluster; "
            "run_on_cluster(sys.argv[1], sys.argv[2])")
    done = subprocess.run([sys.executable, "-c", code, str(yaml), str(tmp_path / "ray")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    for name in ("mined", "curated"):
        assert_frame_equal(corpus.read(local.paths[name]), corpus.read(tmp_path / "ray" / "corpus" / name))
    run = orjson.loads((tmp_path / "ray" / "cluster.json").read_bytes())
    workers, nodes = set(run["nodes"]["workers"]), run["engine"]["nodes"]
    assert run["engine"]["blocks"] >= 4 and run["engine"]["cpus"] == 2
    for name in ("processed", "mined", "curated"):
        assert set(nodes[name]) == workers, (name, nodes[name])  # both worker nodes, never the CPU-less head
    assert sum(nodes["curated"].values()) == len(list((tmp_path / "ray" / "corpus" / "curated").glob("*.parquet")))
