"""The Dockerfile, docker-compose.yml and deploy/ checked statically (no Docker engine runs
here): they parse; every command an image or container runs is a Makefile target's command
with the variables its org.moerank.make label gives; ports, MOERANK_* names and healthcheck
paths match service/settings.py and the service's routes; the dashboard's queries name
metrics and labels that service/metrics.py defines."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml
from prometheus_client.metrics import MetricWrapperBase

from service import metrics
from service.app import create_app
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
MAKE_LABEL = "org.moerank.make"
IN_IMAGE = {"PY": "python"}  # the images' python stands where make uses .venv/bin/python


# ---- Makefile -------------------------------------------------------------------------------


class Makefile:
    """Variables (`?=`, `:=`, `=`), exported names and each target's prerequisites and
    recipe: enough of make to expand a recipe the way make would."""

    def __init__(self, text: str):
        self.variables: dict[str, str] = {}
        self.exported: list[str] = []
        self.targets: dict[str, tuple[list[str], list[str]]] = {}  # unexpanded names
        current = None
        for line in text.replace("\\\n", " ").splitlines():
            if line.startswith("\t") and current:
                self.targets[current][1].append(line.strip())
                continue
            line = line.split("#", 1)[0].rstrip()
            if not line:
                continue
            current = None
            if match := re.match(r"^([A-Za-z_]+)\s*(\?=|:=|=)\s*(.*)$", line):
                self.variables[match[1]] = match[3].strip()
            elif line.startswith("export "):
                self.exported += line.split()[1:]
            elif match := re.match(r"^([^\s:=][^:=]*):(?!=)\s*(.*)$", line):
                current = match[1].strip()
                self.targets[current] = (match[2].split(), [])

    def expand(self, text: str, overrides: dict[str, str]) -> str:
        values = {**self.variables, **overrides}
        for _ in range(10):  # nested $(VAR)s
            text = re.sub(r"\$\((\w+)\)", lambda m: values.get(m[1], ""), text)
        return text

    def command(self, target: str, overrides: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """(environment, argv) the target's python/docker line runs with: its inline
        VAR=value assignments plus make's exported variables, then the command."""
        overrides = {**IN_IMAGE, **overrides}
        by_path = {self.expand(name, overrides): name for name in self.targets}
        name = target
        while not self.targets[name][1]:  # a target without a recipe: its first prerequisite
            name = by_path[self.expand(self.targets[name][0][0], overrides)]
        (line,) = self.targets[name][1]
        words = shlex.split(self.expand(line, overrides))
        env = {name: self.expand(f"$({name})", overrides) for name in self.exported}
        while words and re.match(r"^[A-Z_]+=", words[0]):
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        return env, words


@pytest.fixture(scope="module")
def makefile() -> Makefile:
    return Makefile((ROOT / "Makefile").read_text())


def make_command(makefile: Makefile, label: str) -> tuple[dict[str, str], list[str]]:
    """A label "target VAR=value ..." -> the command that `make target VAR=value` runs."""
    target, *assignments = label.split()
    assert target in makefile.targets, f"no Makefile target {target!r}"
    return makefile.command(target, dict(a.split("=", 1) for a in assignments))


# ---- Dockerfile -----------------------------------------------------------------------------


def dockerfile_stages(text: str) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> [(INSTRUCTION, arguments)], continuation lines joined; the unnamed
    last stage, if any, is "" ."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in re.sub(r"\\\n(\s*#.*\n)*", " ", text).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = arguments.split()
            current = parts[2] if len(parts) > 2 and parts[1].upper() == "AS" else ""
            stages[current] = []
        if current is not None:
            stages[current].append((instruction, arguments.strip()))
    return stages


def instructions(stage: list[tuple[str, str]], name: str) -> list[str]:
    return [arguments for instruction, arguments in stage if instruction == name]


def lineage(stages: dict[str, list[tuple[str, str]]], name: str) -> list[tuple[str, str]]:
    """A stage's instructions after those of the earlier stage it is built FROM, if any."""
    stage = stages[name]
    parent = instructions(stage, "FROM")[0].split()[0]
    return (lineage(stages, parent) if parent in stages else []) + stage


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for arguments in instructions(stage, "ENV"):
        for pair in shlex.split(arguments):
            key, _, value = pair.partition("=")
            env[key] = value
    return env


def label_of(stage: list[tuple[str, str]]) -> str:
    (label,) = [a for a in instructions(stage, "LABEL") if a.startswith(MAKE_LABEL)]
    return shlex.split(label.partition("=")[2])[0]


@pytest.fixture(scope="module")
def stages() -> dict[str, list[tuple[str, str]]]:
    return dockerfile_stages((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def routes() -> set[str]:
    return {route.path for route in create_app(Settings()).routes}


SETTINGS = set(Settings.model_fields)
DEFAULT_PORT = Settings.model_fields["port"].default


def check_settings_names(env: dict[str, str]) -> None:
    for name in env:
        if name.startswith("MOERANK_"):
            assert name.removeprefix("MOERANK_").lower() in SETTINGS, f"{name} is no setting"


def check_runs(argv: list[str]) -> None:
    """The program exists: `python -m X` names an importable module."""
    assert argv[0] == "python", argv
    if argv[1] == "-m":
        assert importlib.util.find_spec(argv[2]) is not None, f"no module {argv[2]}"


def extras_installed(stage: list[tuple[str, str]]) -> set[str]:
    installs = [a for a in instructions(stage, "RUN") if "pip install" in a]
    return {e for a in installs for e in re.findall(r"\.\[([^\]]*)\]", a)}


def check_torch_free(stage: list[tuple[str, str]]) -> None:
    assert not any("torch" in a for a in instructions(stage, "RUN")), "no torch at runtime"
    bases = {a.split()[0] for a in instructions(stage, "FROM")}
    assert not bases & {"bundle", "artifacts"}, "a runtime must not inherit the build stage"


# ---- the tests ------------------------------------------------------------------------------


def test_dockerfile_has_the_targets(stages):
    assert {"bundle", "cpu", "gpu"} <= set(stages)
    assert list(stages)[-1] == "cpu", "the default target (the last stage) is the CPU service"
    assert "cuda" in instructions(stages["gpu"], "FROM")[0].lower() or any(
        "cuda" in a.lower() for a in instructions(stages["gpu"], "FROM")
    )


@pytest.mark.parametrize("target,runtime", [("cpu", "cpu"), ("gpu", "gpu")])
def test_service_images_hold_the_serve_extras_only_and_run_as_non_root(stages, target, runtime):
    stage = lineage(stages, target)
    assert extras_installed(stage) == {f"serve,{runtime}"}
    check_torch_free(stage)
    users = instructions(stage, "USER")
    assert users and users[-1] not in {"root", "0"}
    order = [instruction for instruction, _ in stage]
    assert order.index("USER") < order.index("CMD")


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_service_images_run_make_serve(stages, makefile, routes, target):
    stage = lineage(stages, target)
    env, argv = make_command(makefile, label_of(stage))
    (cmd,) = instructions(stage, "CMD")
    assert json.loads(cmd) == argv
    check_runs(argv)
    image_env = env_of(stage)
    for name, value in env.items():
        assert image_env.get(name) == value, f"{name}: image {image_env.get(name)}, make {value}"
    check_settings_names(image_env)
    assert image_env["MOERANK_HOST"] == "0.0.0.0"
    port = int(image_env.get("MOERANK_PORT", DEFAULT_PORT))
    assert port == DEFAULT_PORT
    assert instructions(stage, "EXPOSE") == [str(port)]
    (health,) = instructions(stage, "HEALTHCHECK")
    probe = " ".join(json.loads(health.split(" CMD ", 1)[1]))
    match = re.search(r"http://127\.0\.0\.1:%s(/\w+)'.*'MOERANK_PORT', '(\d+)'", probe)
    assert match, probe
    assert match[1] == "/healthz" and match[1] in routes
    assert int(match[2]) == DEFAULT_PORT


def test_embed_stage_runs_make_embed_redis_without_torch(stages, makefile, compose):
    """The embeddings job's image: the cpu runtime plus the catalog reader, no torch; it is
    the one compose's embed-items runs."""
    stage = lineage(stages, "embed")
    _, argv = make_command(makefile, label_of(stage))
    (cmd,) = instructions(stage, "CMD")
    assert json.loads(cmd) == argv
    check_runs(argv)
    assert extras_installed(stage) == {"serve,cpu", "embed"}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not any("torch" in d for d in extras["optional-dependencies"]["embed"])
    check_torch_free(stage)
    assert instructions(stage, "USER")[-1] not in {"root", "0"}
    job = compose["services"]["embed-items"]
    assert job["build"]["target"] == "embed" and job["command"] == argv


def local_imports(module: str, seen: set[str] | None = None) -> set[str]:
    """The repository's modules `module` imports, transitively (its packages' __init__ too)."""
    import ast

    seen = set() if seen is None else seen
    path = ROOT / (module.replace(".", "/") + ".py")
    if not path.exists():
        path = path.with_suffix("") / "__init__.py"
    if module in seen or not path.exists():
        return seen
    seen.add(module)
    parts = module.split(".")
    for depth in range(1, len(parts)):
        local_imports(".".join(parts[:depth]), seen)
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # `from package import module` names a module too
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        for name in names:
            local_imports(name, seen)
    return seen


def test_embed_stage_copies_what_the_job_imports(stages):
    """The job's image holds contract/ and service/ (cpu-runtime) and copies the rest of what
    export.embed_items imports file by file: a new import there must be copied too."""
    stage = lineage(stages, "embed")
    copied = [
        source
        for arguments in instructions(stage, "COPY")
        if "--from=" not in arguments
        for source in arguments.split()[:-1]
    ]
    for module in local_imports("export.embed_items"):
        path = module.replace(".", "/")
        files = [f"{path}.py", f"{path}/__init__.py"]
        assert any(
            any(f == source or f.startswith(source.rstrip("/") + "/") for f in files)
            for source in copied
        ), f"the embed stage does not copy {module} (export.embed_items imports it)"


def test_bundle_stage_runs_make_bundle(stages, makefile):
    stage = stages["bundle"]
    _, argv = make_command(makefile, label_of(stage))
    commands = [
        shlex.split(part)
        for run in instructions(stage, "RUN")
        for part in run.split("&&")
    ]  # fmt: skip
    assert argv in commands
    check_runs(argv)
    installs = " ".join(a for a in instructions(stage, "RUN") if "pip install" in a)
    assert '"${TORCH_SPEC}"' in installs and ".[serve,cpu,train," in installs
    # the torch the Makefile pins, from the CPU index
    args = dict(a.split("=", 1) for a in instructions(stage, "ARG"))
    assert args["TORCH_SPEC"] == makefile.variables["TORCH_SPEC"]
    assert args["TORCH_INDEX"].endswith("/cpu")


def test_dockerfile_copies_what_a_clone_has(stages):
    """COPY sources exist (./artifacts only for the `local` stage: `make bundle` makes it)
    and .dockerignore keeps them in the build context; every COPY --from names an earlier
    stage."""
    ignored = [
        line.strip().rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    names = list(stages)
    for position, (name, stage) in enumerate(stages.items()):
        for arguments in instructions(stage, "COPY"):
            words = arguments.split()
            sources = [w for w in words[:-1] if not w.startswith("--")]
            source_stage = next((w.split("=")[1] for w in words if w.startswith("--from=")), None)
            if source_stage:
                assert source_stage in names[:position], f"{name}: unknown stage {source_stage}"
                continue
            for source in sources:
                assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
                if name == "local":
                    assert source == "artifacts"
                else:
                    assert (ROOT / source).exists(), f"{name}: COPY {source}: not in the repo"


def test_compose_commands_are_make_targets(compose, makefile):
    services = compose["services"]
    labelled = {n: s for n, s in services.items() if MAKE_LABEL in s.get("labels", {})}
    assert {"embed-items", "locust"} <= set(labelled)
    for name, service in labelled.items():
        env, argv = make_command(makefile, service["labels"][MAKE_LABEL])
        assert service["command"] == argv, name
        check_runs(argv)
        for key, value in env.items():
            if key.startswith("MOERANK_"):
                assert service.get("environment", {}).get(key, value) == value


def test_compose_wires_the_stack(compose, stages, routes):
    services = compose["services"]
    redis, ranker, embed = services["redis"], services["ranker"], services["embed-items"]
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]
    assert ranker["build"]["target"] == "cpu"
    assert ranker["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "embed-items": {"condition": "service_completed_successfully"},
    }
    env = {**env_of(stages["cpu"]), **ranker["environment"]}
    check_settings_names(ranker["environment"])
    # The job writes where the ranker reads: same Redis, same key prefix.
    command = embed["command"]
    assert command[command.index("--redis") + 1] == env["MOERANK_REDIS_URL"]
    assert command[command.index("--prefix") + 1] == env.get(
        "MOERANK_KEY_PREFIX", Settings.model_fields["key_prefix"].default
    )
    assert embed["depends_on"] == {"redis": {"condition": "service_healthy"}}
    port = int(env["MOERANK_PORT"])
    assert [p.rsplit(":", 1)[1] for p in ranker["ports"]] == [str(port)]
    host = services["locust"]["command"][services["locust"]["command"].index("--host") + 1]
    assert host == f"http://ranker:{port}"
    assert services["locust"]["profiles"] == ["loadtest"]
    assert services["locust"]["depends_on"] == {"ranker": {"condition": "service_healthy"}}


def test_compose_redis_persists_and_is_capped(compose):
    """Its vectors survive a restart (snapshots or an AOF on a volume), and it evicts as a
    cache does."""
    redis = compose["services"]["redis"]
    command = redis["command"]

    def option(name: str) -> str:
        return command[command.index(name) + 1]

    assert option("--appendonly") == "yes" or option("--save") not in ("", '""')
    assert option("--maxmemory-policy") == "allkeys-lru" and option("--maxmemory") != "0"
    assert any(volume.endswith(":/data") for volume in redis["volumes"])


def test_compose_mounts_exist(compose):
    for name, service in compose["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source} is not in the repo"


def test_prometheus_scrapes_the_ranker(compose, stages, routes):
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job.get("metrics_path", "/metrics") in routes
    env = {**env_of(stages["cpu"]), **compose["services"]["ranker"]["environment"]}
    assert job["static_configs"][0]["targets"] == [f"ranker:{env['MOERANK_PORT']}"]
    mounted = compose["services"]["prometheus"]["volumes"][0].split(":")
    assert mounted[0] == "./deploy/prometheus.yml"
    assert f"--config.file={mounted[1]}" in compose["services"]["prometheus"]["command"]


def test_grafana_is_provisioned(compose):
    provisioning = ROOT / "deploy" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    prometheus_port = compose["services"]["prometheus"]["ports"][0].rsplit(":", 1)[1]
    assert source["url"] == f"http://prometheus:{prometheus_port}"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "moerank.yml").read_text())[
        "providers"
    ]
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    local = {inside: outside for outside, inside in mounts.items()}[provider["options"]["path"]]
    dashboards = list((ROOT / local).glob("*.json"))
    assert dashboards
    for path in dashboards:
        for panel in json.loads(path.read_text())["panels"]:
            assert panel["datasource"]["uid"] == source["uid"]


def exposed_metrics() -> dict[str, set[str]]:
    """Sample name -> label names, for every metric service/metrics.py defines."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "gauge": [""]}
    out = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            labels = set(value._labelnames)
            for suffix in suffixes[value._type]:
                out[value._name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def test_dashboard_queries_name_real_metrics_and_labels(routes):
    exposed = exposed_metrics()
    path = ROOT / "deploy" / "grafana" / "dashboards" / "moerank.json"
    panels = json.loads(path.read_text())["panels"]
    expressions = [t["expr"] for panel in panels for t in panel["targets"]]
    covered = set()
    for expr in expressions:
        names = re.findall(r"\b(moerank_\w+)", expr)
        assert names, expr
        known = set()
        for name in names:
            assert name in exposed, f"{name} is not a metric of service/metrics.py: {expr}"
            known |= exposed[name]
            covered.add(name)
        for name, matchers in re.findall(r"\b(moerank_\w+)\{([^}]*)\}", expr):
            for label, value in re.findall(r'(\w+)\s*(?:=~|!=|!~|=)\s*"([^"]*)"', matchers):
                assert label in exposed[name], f"{name} has no label {label}"
                if label == "endpoint":
                    assert value in routes
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            for label in (g.strip() for g in group.split(",")):
                assert label in known, f"no metric of {expr} has the label {label}"
    # the panels: latency from the histograms, RPS, errors, cache hits, experts
    for needed in (
        "moerank_request_duration_seconds_bucket",
        "moerank_request_duration_seconds_count",
        "moerank_requests_rejected_total",
        "moerank_embedding_lookups_total",
        "moerank_expert_selected_total",
        # online experiments: CTR / ATC / CTCVR per variant, shadow agreement
        "moerank_events_total",
        "moerank_served_total",
        "moerank_shadow_agreement_sum",
        "moerank_shadow_agreement_count",
        "moerank_shadow_dropped_total",
    ):
        assert needed in covered
    quantiles = {
        float(q) for q in re.findall(r"histogram_quantile\(([\d.]+)", " ".join(expressions))
    }
    assert {0.5, 0.95, 0.99} <= quantiles


def test_make_up_and_down_wrap_compose(makefile):
    for target, verb in (("up", "up"), ("down", "down")):
        assert target in makefile.targets
        recipe = " ".join(makefile.targets[target][1])
        assert f"docker compose {verb}" in recipe
