"""The deployment files in infra/ parse, agree with each other and with the code they run."""

import re
from pathlib import Path

import pytest
import yaml

from vad.config import FuseJobConfig, ScoreJobConfig, TrainJobConfig, parse_config

ROOT = Path(__file__).parents[2]
INFRA = ROOT / "infra"


def pins() -> dict[str, str]:
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line and not line.startswith("#"))


def load(relative: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((INFRA / relative).read_text()) if doc is not None]


def configmap_configs() -> dict[str, dict]:
    [configmap] = load("k8s/configmap.yaml")
    return {name: yaml.safe_load(text) for name, text in configmap["data"].items()}


def test_every_infra_yaml_parses():
    files = sorted(INFRA.rglob("*.yaml")) + sorted(INFRA.rglob("*.yml"))
    assert len(files) >= 7
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path


def test_infra_never_imports_vad():
    for path in INFRA.rglob("*"):
        if path.is_file():
            text = path.read_text()
            assert not re.search(r"^\s*(from|import)\s+vad\b", text, re.M), path


@pytest.mark.parametrize("name, config_model", [("score.yaml", ScoreJobConfig), ("train.yaml", TrainJobConfig), ("fuse.yaml", FuseJobConfig)])
def test_cluster_configs_are_valid_job_configs(name, config_model):
    cfg = parse_config(configmap_configs()[name], config_model, f"configmap {name}")
    if config_model is FuseJobConfig:
        assert cfg.ray.address == "auto" and (ROOT / "jobs" / "fuse.py").is_file()
    elif config_model is ScoreJobConfig:
        assert cfg.ray.address == "auto" and cfg.scorer.num_gpus == 1
    else:
        assert cfg.distributed.use_gpu and cfg.ray.address == "auto"
        assert cfg.distributed.storage_path.startswith("s3://"), "checkpoints must outlive the pods"


def ray_clusters() -> list[tuple[str, dict]]:
    out = []
    for relative in ("k8s/rayjob-score.yaml", "k8s/rayjob-train.yaml"):
        [job] = load(relative)
        out.append((relative, job["spec"]["rayClusterSpec"]))
    [cluster] = load("k8s/raycluster.yaml")
    out.append(("k8s/raycluster.yaml", cluster["spec"]))
    return out


@pytest.mark.parametrize("relative, spec", ray_clusters(), ids=lambda v: v if isinstance(v, str) else "")
def test_ray_clusters_autoscale_within_bounds_and_match_the_ray_pin(relative, spec):
    assert spec["rayVersion"] == pins()["ray"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", "no work on the head"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    gpu_groups = [g for g in groups.values() if "num-gpus" in g["rayStartParams"]]
    assert gpu_groups, f"{relative} has no GPU worker group"
    for group in groups.values():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
        [container] = group["template"]["spec"]["containers"]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu")
        if group in gpu_groups:
            assert gpus == group["rayStartParams"]["num-gpus"] == container["resources"]["requests"]["nvidia.com/gpu"]
            assert "vad-cuda" in container["image"], "GPU workers need the CUDA image"
        else:
            assert gpus is None and "vad-cuda" not in container["image"]


@pytest.mark.parametrize("relative, module, config", [("k8s/rayjob-score.yaml", "score", "score.yaml"), ("k8s/rayjob-train.yaml", "train", "train.yaml")])
def test_rayjobs_run_our_entry_points_and_shut_down(relative, module, config):
    [job] = load(relative)
    assert job["kind"] == "RayJob" and job["apiVersion"] == "ray.io/v1"
    spec = job["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    assert spec["entrypoint"] == f"python -m jobs.{module} --config /config/{config}"
    assert (ROOT / "jobs" / f"{module}.py").is_file() and config in configmap_configs()
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    assert {"name": "config", "configMap": {"name": "vad-config"}} in head["volumes"]
    assert job["metadata"]["generateName"].endswith("-"), "one RayJob per submission"


def test_the_jobs_fit_the_gpu_groups():
    score, train = configmap_configs()["score.yaml"], configmap_configs()["train.yaml"]
    [score_job], [train_job] = load("k8s/rayjob-score.yaml"), load("k8s/rayjob-train.yaml")
    gpu_max = {
        "score": sum(g["maxReplicas"] for g in score_job["spec"]["rayClusterSpec"]["workerGroupSpecs"] if "num-gpus" in g["rayStartParams"]),
        "train": sum(g["maxReplicas"] for g in train_job["spec"]["rayClusterSpec"]["workerGroupSpecs"] if "num-gpus" in g["rayStartParams"]),
    }
    assert score["scorer"]["concurrency"] * score["scorer"]["num_gpus"] <= gpu_max["score"]
    assert train["distributed"]["num_workers"] * train["distributed"]["gpus_per_worker"] <= gpu_max["train"]


def test_the_nightly_cronjob_creates_the_scoring_rayjob():
    docs = {doc["kind"]: doc for doc in load("k8s/cronjob-nightly.yaml")}
    cron = docs["CronJob"]["spec"]
    assert len(cron["schedule"].split()) == 5 and cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    [container] = pod["containers"]
    assert container["command"][:3] == ["kubectl", "create", "-f"]
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["command"][3].startswith(mount)
    configmap = pod["volumes"][0]["configMap"]["name"]
    header = (INFRA / "k8s/cronjob-nightly.yaml").read_text()
    assert f"kubectl create configmap {configmap} --from-file=rayjob.yaml=infra/k8s/rayjob-score.yaml" in header
    assert container["command"][3].endswith("/rayjob.yaml")
    [rule] = docs["Role"]["rules"]
    assert rule["apiGroups"] == ["ray.io"] and "rayjobs" in rule["resources"] and "create" in rule["verbs"]
    assert docs["RoleBinding"]["roleRef"]["name"] == docs["Role"]["metadata"]["name"]


RAY_AUTH_SECRET = "vad-ray-auth"


def pod_templates(relative: str) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod a RayJob or RayCluster file makes: head, each worker group, the submitter."""
    [doc] = load(relative)
    cluster = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
    pods = [("head", cluster["headGroupSpec"]["template"]["spec"])]
    pods += [(group["groupName"], group["template"]["spec"]) for group in cluster["workerGroupSpecs"]]
    if doc["kind"] == "RayJob":
        assert doc["spec"]["submissionMode"] == "K8sJobMode" and "submitterPodTemplate" in doc["spec"], relative
        pods.append(("submitter", doc["spec"]["submitterPodTemplate"]["spec"]))
    return pods


@pytest.mark.parametrize("relative", ["k8s/rayjob-score.yaml", "k8s/rayjob-train.yaml", "k8s/raycluster.yaml"])
def test_every_ray_pod_reads_the_auth_token_from_its_secret(relative):
    """Ray 2.60 heads authenticate by token: the head, every worker and the pod that submits the job run with
    RAY_AUTH_MODE=token and read the token from a file of the Secret, mounted in each of their containers (the
    nightly CronJob creates rayjob-score.yaml, so the night reaches it through that file)."""
    for where, pod in pod_templates(relative):
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE") == "token", (relative, where)
            path = env.get("RAY_AUTH_TOKEN_PATH") or ""
            mounts = [m for m in container.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
            assert mounts and secrets.get(mounts[0]["name"]) == RAY_AUTH_SECRET and mounts[0].get("readOnly"), (relative, where, path)
            assert "RAY_AUTH_TOKEN" not in env, "the token itself never sits in a manifest"
    text = (INFRA / relative).read_text()
    assert "auth_token" in text and not re.search(r"auth_token['\"]?\s*[:=]\s*['\"]?[0-9a-f]{16,}", text)


def test_the_nightly_cronjob_reaches_the_token_through_its_rayjob():
    header = (INFRA / "k8s/cronjob-nightly.yaml").read_text()
    assert "--from-file=rayjob.yaml=infra/k8s/rayjob-score.yaml" in header
    assert {where for where, _ in pod_templates("k8s/rayjob-score.yaml")} >= {"head", "submitter"}
    readme = (ROOT / "README.md").read_text()
    assert f"kubectl create secret generic {RAY_AUTH_SECRET}" in readme and "rotat" in readme.lower()


def test_the_aws_cluster_launcher():
    [cluster] = load("aws/cluster.yaml")
    assert cluster["provider"]["type"] == "aws"
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"]["CPU"] == 0
    gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
    assert gpu and "vad-cuda" in cluster["docker"]["worker_image"]
    assert sum(t.get("max_workers", 0) for t in types.values()) <= cluster["max_workers"]
    for node_type in types.values():
        assert node_type.get("min_workers", 0) <= node_type.get("max_workers", 0) or node_type is types[cluster["head_node_type"]]
        assert "IamInstanceProfile" in node_type["node_config"], "S3 access through the instance profile, not keys"


def test_dockerfiles_pin_what_the_project_pins():
    cuda = (INFRA / "docker/Dockerfile.cuda").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+", cuda, re.M)
    torch = re.search(r"pip install torch==(\S+) --index-url https://download.pytorch.org/whl/cu\d+", cuda)
    assert torch and torch.group(1) == pins()["torch"]
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        text = (INFRA / "docker" / name).read_text()
        assert "requirements.lock" in text and "COPY jobs" in text and "COPY configs" in text


def test_the_images_install_a_head_that_accepts_jobs():
    """KubeRay RayJobs and `ray job submit` go through the dashboard's job server, which only
    `ray[default]` brings: both images install the `cluster` extra, and the lock pins what it needs."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    ray_pin = next(d for d in project["dependencies"] if d.startswith("ray["))
    assert project["optional-dependencies"]["cluster"] == [f"ray[default]=={ray_pin.split('==')[1]}"]
    assert "cluster" in re.search(r"vad\[([a-z,]+)\]", project["optional-dependencies"]["dev"][0]).group(1)
    import importlib.metadata

    needed = [r.split(";")[0].split(">")[0].split("!")[0].split("<")[0].split("=")[0].strip()
              for r in importlib.metadata.requires("ray") if 'extra == "default"' in r]
    locked = {name.lower().replace("_", "-") for name in pins()}
    assert {n.lower().replace("_", "-") for n in needed} <= locked, "the lock must pin every ray[default] requirement"
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        install = [line for line in (INFRA / "docker" / name).read_text().splitlines() if "pip install" in line and "--index-url" not in line]
        assert len(install) == 1 and re.search(r'"\.\[([a-z,]*cluster[a-z,]*)\]"', install[0]), (name, install)


def test_docker_compose_serves_minio_and_the_pinned_mlflow():
    [compose] = load("docker-compose.yml")
    services = compose["services"]
    assert {"minio", "mlflow"} <= set(services)
    assert services["mlflow"]["image"].endswith(f":v{pins()['mlflow']}")
    assert "9000:9000" in services["minio"]["ports"] and "5000:5000" in services["mlflow"]["ports"]
