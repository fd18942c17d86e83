"""The cluster configs: Ray's own launcher schema, and the properties the docs promise.

Validation follows `ray up` up to the first cloud call: `prepare_config` (merge with the
provider's defaults, exactly as `ray up` does) and then `validate_config` (Ray's
`ray-schema.json` through jsonschema, a dependency of Ray, plus Ray's cross-field checks).
No network, no cloud credentials.
"""

import copy
import json
import re
from pathlib import Path

import pytest
import yaml

jsonschema = pytest.importorskip("jsonschema")
pytest.importorskip("ray")
from ray.autoscaler._private.util import prepare_config, validate_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER_CONFIGS = [ROOT / "cluster.yaml", ROOT / "docs" / "cluster-local.yaml"]
RAYJOB = ROOT / "docs" / "kuberay-rayjob.yaml"


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _ray_up_checks(config: dict) -> dict:
    """What `ray up` does to a config before it talks to a cloud; raises if Ray would refuse."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _head_start(prepared: dict) -> str:
    return "\n".join(prepared["head_start_ray_commands"])


@pytest.fixture(params=LAUNCHER_CONFIGS, ids=lambda p: p.name)
def launcher(request) -> tuple[Path, dict]:
    return request.param, _load(request.param)


def test_valid_for_ray_schema(launcher):
    _, config = launcher
    _ray_up_checks(config)


def test_broken_copies_fail_validation(launcher):
    _, config = launcher
    unknown_key = copy.deepcopy(config)
    unknown_key["max_worker"] = 3  # a typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="max_worker"):
        _ray_up_checks(unknown_key)
    no_provider = copy.deepcopy(config)
    del no_provider["provider"]
    with pytest.raises((jsonschema.ValidationError, KeyError)):
        validate_config(no_provider)


def test_dashboard_on_loopback_and_nothing_on_all_interfaces(launcher):
    path, config = launcher
    prepared = _ray_up_checks(config)
    head = _head_start(prepared)
    assert "ray start --head" in head
    assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", head) or re.search(
        r"--include-dashboard[= ](false|False)\b", head
    ), head
    # Not in the file, and not in what Ray's defaults merge in (the AWS defaults bind 0.0.0.0).
    assert "0.0.0.0" not in path.read_text()
    assert "0.0.0.0" not in json.dumps(prepared)


def test_token_auth_on_every_node(launcher):
    _, config = launcher
    prepared = _ray_up_checks(config)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in prepared[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    assert "~/.ray/auth_token" in prepared["file_mounts"]


def test_node_types_and_setup(launcher):
    _, config = launcher
    prepared = _ray_up_checks(config)
    assert prepared["head_node_type"] in prepared["available_node_types"]
    for name, node_type in prepared["available_node_types"].items():
        if name != prepared["head_node_type"]:
            assert 0 <= node_type["min_workers"] <= node_type["max_workers"], name
    # The repository is shipped and installed on every node (head and workers).
    assert prepared["file_mounts"].get("~/rashomon") == "."
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert any("pip install" in c and "-e ~/rashomon" in c for c in prepared[key]), key


def test_aws_cpu_head_gpu_workers():
    config = _load(ROOT / "cluster.yaml")
    assert config["provider"]["type"] == "aws"
    prepared = _ray_up_checks(config)
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    workers = [t for n, t in types.items() if n != prepared["head_node_type"]]
    assert workers and all(t["resources"].get("GPU", 0) >= 1 for t in workers)
    assert sum(t["min_workers"] for t in workers) <= prepared["max_workers"]
    # CPU head: the CPU torch wheel before the project; GPU workers: the default (CUDA) wheel.
    head_cmds = prepared["head_setup_commands"]
    cpu_torch = [i for i, c in enumerate(head_cmds) if "download.pytorch.org/whl/cpu" in c]
    project = [i for i, c in enumerate(head_cmds) if "-e ~/rashomon" in c]
    assert cpu_torch and project and cpu_torch[0] < project[0]
    assert not any("whl/cpu" in c for c in prepared["worker_setup_commands"])
    assert any("boto3" in c for c in head_cmds)  # the AWS autoscaler on the head needs it


def test_local_variant():
    config = _load(ROOT / "docs" / "cluster-local.yaml")
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and config["provider"]["worker_ips"]
    prepared = _ray_up_checks(config)
    (worker,) = prepared["available_node_types"].values()
    assert worker["max_workers"] == len(config["provider"]["worker_ips"])


def test_kuberay_rayjob():
    docs = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d]
    (job,) = [d for d in docs if d["kind"] == "RayJob"]
    assert job["apiVersion"] == "ray.io/v1"
    assert "rashomon run jobs/adult-mlp.yaml --out /mnt/results/" in job["spec"]["entrypoint"]
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    (gpu,) = cluster["workerGroupSpecs"]
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    worker = gpu["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]
    for pod in (head, worker):
        (container,) = pod["containers"]
        assert container["resources"]["requests"]
        assert any(m["mountPath"] == "/mnt/results" for m in container["volumeMounts"])
        (volume,) = pod["volumes"]
        assert volume["persistentVolumeClaim"]["claimName"] == "rashomon-results"
    (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "rashomon-results"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "0.0.0.0" not in RAYJOB.read_text()
