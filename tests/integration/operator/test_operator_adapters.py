"""LoRA adapters in the running operator: loaded into ready replicas, never by a restart.

The cluster is KMock's emulator (no Kubernetes API server can run here; it
applies no CRD schema, so a bad spec reaches the operator as through an
outdated CRD) and the test plays the kubelet: it creates the pods a
Deployment would run, each with a container port named `admin` whose admin
API is a real HTTP server on 127.0.0.1 recording the operator's calls
(fake_admin.py). What is asserted is what a user sees: `status.adapters`,
the Events, the calls each replica got, and the Deployment the operator
does not rewrite while adapters come and go.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modelplane.api import contract
from tests.integration.operator.conftest import Cluster, OperatorFactory, wait_for
from tests.integration.operator.fake_admin import FakeAdmin
from tests.integration.operator.fake_pods import FakePod, FakePods

SQL = {"name": "sql", "source": "hf://example/smollm2-sql-lora"}
FRENCH = {"name": "french", "source": "file:///adapters/french", "revision": "v1"}
SMOLLM2 = {
    "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct", "servedName": "smollm2"},
    "resources": {"gpus": 0},
}
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/default/deployments/chat"
# Shorter than the operator's periodic adapter pass (30s): what arrives within it came
# from the LLMDeployment's or the pod's event.
EVENT_DRIVEN_S = 10.0


@pytest.fixture
def admins() -> Iterator[list[FakeAdmin]]:
    made: list[FakeAdmin] = []
    yield made
    for admin in made:
        admin.close()


def start_replica(
    fake_pods: FakePods, admins: list[FakeAdmin], name: str, *, ready: bool = True
) -> tuple[FakePod, FakeAdmin]:
    admin = FakeAdmin()
    admins.append(admin)
    return fake_pods.start("chat", name, ready=ready, admin_port=admin.port), admin


def adapters_status(cluster: Cluster) -> list[dict[str, Any]]:
    return list(cluster.status("chat").get("adapters") or [])


def entry(cluster: Cluster, name: str) -> dict[str, Any]:
    return next(a for a in adapters_status(cluster) if a["name"] == name)


def service_adapters(cluster: Cluster) -> str | None:
    annotations: dict[str, str] = cluster.objects("services")["chat"]["metadata"]["annotations"]
    return annotations.get(contract.ANNOTATION_ADAPTERS)


def deployment_writes(cluster: Cluster, since: int) -> list[str]:
    return [w for w in cluster.operator_writes(since) if w.endswith(DEPLOYMENT_PATH)]


def test_adapters_load_reload_and_unload_without_a_restart(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods, admins: list[FakeAdmin]
) -> None:
    with run_operator():
        # LoRA kept on by the engine settings: no adapter change ever touches the template.
        cluster.create_llmd("chat", {**SMOLLM2, "engine": {"maxLoras": 2}})
        deployment = wait_for("the Deployment", lambda: cluster.objects("deployments")["chat"])
        template = deployment["spec"]["template"]
        _, a = start_replica(fake_pods, admins, "chat-a")
        _, b = start_replica(fake_pods, admins, "chat-b")
        wait_for("both replicas asked", lambda: a.listed and b.listed)
        assert adapters_status(cluster) == []
        since = len(cluster.operator_requests())

        # An adapter added: loaded on every ready replica at once.
        cluster.patch_llmd("chat", {"adapters": [SQL]})
        wait_for(
            "sql on both",
            lambda: entry(cluster, "sql")["state"] == "Loaded",
            timeout=EVENT_DRIVEN_S,
        )
        assert entry(cluster, "sql") == {
            "name": "sql",
            "revision": "main",
            "state": "Loaded",
            "loadedReplicas": 2,
            "replicas": 2,
            "message": "Loaded on 2/2 replicas",
        }
        put = ("PUT", "sql", {"source": SQL["source"], "revision": "main"})
        assert a.made() == [put] and b.made() == [put]
        (loaded,) = wait_for("an event", lambda: cluster.events("chat", "AdapterLoaded"))
        assert loaded["type"] == "Normal"
        assert loaded["message"] == (
            "adapter sql at revision main loaded on 2 replicas: chat-a, chat-b"
        )
        wait_for("the Service names it", lambda: service_adapters(cluster) == "sql")

        # A second adapter: loaded beside the first, nothing else touched.
        cluster.patch_llmd("chat", {"adapters": [SQL, FRENCH]})
        wait_for("french on both", lambda: entry(cluster, "french")["state"] == "Loaded")
        assert a.holds() == b.holds() == {"sql": "main", "french": "v1"}
        french = ("PUT", "french", {"source": FRENCH["source"], "revision": "v1"})
        assert a.made() == [put, french]
        wait_for("the Service names both", lambda: service_adapters(cluster) == "sql,french")

        # A replica that becomes ready later gets both.
        c_pod, c = start_replica(fake_pods, admins, "chat-c", ready=False)
        assert c.made() == []  # not ready: not yet
        fake_pods.set_ready(c_pod, True)
        # Well within the 30s periodic pass: the pod's own event brings it.
        wait_for(
            "both on the late one",
            lambda: c.holds() == {"sql": "main", "french": "v1"},
            timeout=EVENT_DRIVEN_S,
        )
        wait_for("3/3", lambda: entry(cluster, "french")["message"] == "Loaded on 3/3 replicas")

        # A new revision reloads; removing one unloads it.
        cluster.patch_llmd("chat", {"adapters": [{**SQL, "revision": "v2"}]})
        wait_for("sql v2 everywhere", lambda: all(x.holds() == {"sql": "v2"} for x in (a, b, c)))
        wait_for("status of v2", lambda: entry(cluster, "sql")["revision"] == "v2")
        wait_for("french gone from status", lambda: len(adapters_status(cluster)) == 1)
        assert all(("DELETE", "french", None) in x.made("DELETE") for x in (a, b, c))
        (reloaded,) = wait_for("reloaded", lambda: cluster.events("chat", "AdapterReloaded"))
        assert reloaded["message"] == (
            "adapter sql at revision v2 reloaded on 3 replicas: chat-a, chat-b, chat-c"
        )
        (unloaded,) = wait_for("unloaded", lambda: cluster.events("chat", "AdapterUnloaded"))
        assert (
            unloaded["message"] == "adapter french unloaded on 3 replicas: chat-a, chat-b, chat-c"
        )

        # None of it wrote the Deployment: no rollout, no restart.
        assert deployment_writes(cluster, since) == []
        assert cluster.objects("deployments")["chat"]["spec"]["template"] == template
        assert cluster.events("chat", "AdapterFailed") == []

        # The last adapter removed: unloaded everywhere, and status.adapters goes.
        cluster.patch_llmd("chat", {"adapters": []})
        wait_for("no adapters", lambda: all(x.holds() == {} for x in (a, b, c)))
        wait_for("status.adapters removed", lambda: "adapters" not in cluster.status("chat"))
        assert deployment_writes(cluster, since) == []


def test_the_first_adapter_turns_lora_on_once(
    cluster: Cluster, run_operator: OperatorFactory
) -> None:
    with run_operator():
        cluster.create_llmd("chat", SMOLLM2)
        deployment = wait_for("the Deployment", lambda: cluster.objects("deployments")["chat"])
        (server,) = deployment["spec"]["template"]["spec"]["containers"]
        assert [p["name"] for p in server["ports"]] == [contract.SERVER_PORT_NAME]
        assert "--admin-port" not in server["args"] and "--max-loras" not in server["args"]

        cluster.patch_llmd("chat", {"adapters": [SQL]})

        def lora_template() -> dict[str, Any] | None:
            template = cluster.objects("deployments")["chat"]["spec"]["template"]
            (server,) = template["spec"]["containers"]
            return template if "--admin-port" in server["args"] else None

        template = wait_for("LoRA in the template", lora_template)
        (server,) = template["spec"]["containers"]
        assert {p["name"]: p["containerPort"] for p in server["ports"]} == {
            contract.SERVER_PORT_NAME: contract.SERVER_PORT,
            contract.SERVER_ADMIN_PORT_NAME: contract.SERVER_ADMIN_PORT,
        }
        args = server["args"]
        assert args[args.index("--max-loras") + 1] == "4"
        assert args[args.index("--admin-port") + 1] == str(contract.SERVER_ADMIN_PORT)
        since = len(cluster.operator_requests())

        cluster.patch_llmd("chat", {"adapters": [SQL, FRENCH]})
        wait_for("the Service names both", lambda: service_adapters(cluster) == "sql,french")
        assert deployment_writes(cluster, since) == []


def test_a_failing_load_is_reported_once_and_retried(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods, admins: list[FakeAdmin]
) -> None:
    with run_operator(resyncSeconds=0.5):
        cluster.create_llmd("chat", {**SMOLLM2, "adapters": [SQL]})
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        _, a = start_replica(fake_pods, admins, "chat-a")
        _, b = start_replica(fake_pods, admins, "chat-b")
        b.fail["sql"] = "no adapter_config.json in hf://example/smollm2-sql-lora"
        failed = wait_for(
            "the failure", lambda: (e := entry(cluster, "sql"))["state"] == "Failed" and e
        )
        assert failed["loadedReplicas"] == 1 and failed["replicas"] == 2
        assert failed["message"] == (
            "pod chat-b: HTTP 400: no adapter_config.json in hf://example/smollm2-sql-lora; "
            "loaded on 1/2 replicas"
        )
        (warning,) = wait_for("a Warning", lambda: cluster.events("chat", "AdapterFailed"))
        assert warning["type"] == "Warning" and "pod chat-b: HTTP 400" in warning["message"]
        # Retried on every pass, reported once.
        wait_for("a retry", lambda: len(b.made("PUT")) >= 3)
        assert len(cluster.events("chat", "AdapterFailed")) == 1

        del b.fail["sql"]  # the adapter got fixed upstream
        wait_for("loaded", lambda: entry(cluster, "sql")["message"] == "Loaded on 2/2 replicas")
        assert a.made("PUT") == [("PUT", "sql", {"source": SQL["source"], "revision": "main"})]


@pytest.mark.parametrize(
    ("adapters", "message"),
    [
        ([SQL, {**SQL, "revision": "v2"}], "adapters[].name must be unique (repeated: sql)"),
        ([{**SQL, "name": "smollm2"}], "must differ from the base model's served name"),
        ([{**SQL, "source": "http://example.com/lora"}], "must start with hf://, pvc://"),
        ([{**SQL, "name": "sql/evil"}], "spec.adapters.0.name: String should match pattern"),
    ],
    ids=["duplicate", "model's name", "unknown scheme", "bad name"],
)
def test_a_bad_adapter_spec_is_reported(
    cluster: Cluster,
    run_operator: OperatorFactory,
    fake_pods: FakePods,
    admins: list[FakeAdmin],
    adapters: list[dict[str, Any]],
    message: str,
) -> None:
    with run_operator():
        cluster.create_llmd("chat", {**SMOLLM2, "adapters": adapters})
        wait_for("phase Failed", lambda: cluster.status("chat").get("phase") == "Failed")
        ready = cluster.condition("chat", "Ready")
        assert ready["reason"] == "InvalidSpec" and message in ready["message"], ready
        (warning,) = wait_for("a Warning", lambda: cluster.events("chat", "InvalidSpec"))
        assert message in warning["message"]
        assert "chat" not in cluster.objects("deployments")


def test_a_pvc_adapter_must_be_on_the_model_s_claim(
    cluster: Cluster, run_operator: OperatorFactory, fake_pods: FakePods, admins: list[FakeAdmin]
) -> None:
    cluster.kubectl.create(
        "persistentvolumeclaims",
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "weights", "namespace": "default"},
            "spec": {
                "accessModes": ["ReadOnlyMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    spec = {
        **SMOLLM2,
        "model": {"source": "pvc://weights/smollm2", "servedName": "smollm2"},
        "adapters": [
            {"name": "here", "source": "pvc://weights/loras/sql"},
            {"name": "elsewhere", "source": "pvc://other/loras/sql"},
        ],
    }
    with run_operator():
        cluster.create_llmd("chat", spec)
        wait_for("the Deployment", lambda: "chat" in cluster.objects("deployments"))
        _, a = start_replica(fake_pods, admins, "chat-a")
        wait_for("here loaded", lambda: entry(cluster, "here")["state"] == "Loaded")
        # The model's claim is mounted at /models: the replica loads it from there.
        assert a.made() == [
            ("PUT", "here", {"source": "file:///models/loras/sql", "revision": "main"})
        ]
        elsewhere = entry(cluster, "elsewhere")
        assert elsewhere["state"] == "Failed"
        assert "claim 'other' is not mounted" in elsewhere["message"]
