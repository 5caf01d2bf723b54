"""The multi-node launch files in configs/accelerate/ are valid accelerate configs (accelerate's own loader rejects an
unknown key or type) and agree with each other on the cluster they describe."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("accelerate")
from accelerate.commands.config.config_args import load_config_from_file  # noqa: E402
from accelerate.utils import DistributedType  # noqa: E402

FILES = sorted((Path(__file__).resolve().parents[2] / "configs" / "accelerate").glob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_accelerate_config_loads(path):
    cfg = load_config_from_file(str(path))
    assert (cfg.num_machines, cfg.num_processes, cfg.mixed_precision) == (2, 16, "bf16")
    assert not cfg.use_cpu and cfg.main_process_port == 29500


def test_one_file_per_strategy():
    kinds = {load_config_from_file(str(p)).distributed_type for p in FILES}
    assert kinds == {DistributedType.MULTI_GPU, DistributedType.FSDP, DistributedType.DEEPSPEED}
    stages = sorted(load_config_from_file(str(p)).deepspeed_config["zero_stage"] for p in FILES
                    if "deepspeed" in p.name)
    assert stages == [2, 3]
