"""Discovery's trust decisions and model keys, as pure functions of the watched objects.

Which model Services may take traffic (`ownership`), which LLMDeployment keeps
a model name two of them claim, what key a Secret yields (`model_keys`), and
a static model's `upstreamApiKeyFile`. The running gateway is tested with the
same hostile inputs in tests/integration/gateway.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest

from modelplane.api import contract
from modelplane.gateway.config_files import ConfigError
from modelplane.gateway.credentials import first_key, repeated_credential_header
from modelplane.gateway.discovery.kubernetes import (
    model_service,
    routes_from_cluster,
    slice_endpoints,
)
from modelplane.gateway.discovery.model_keys import KeyReading, key_from_secret, merge_readings
from modelplane.gateway.discovery.ownership import (
    Owner,
    SecretRef,
    claim_model_names,
    owner_of,
    untrusted_reason,
)
from modelplane.gateway.discovery.static import (
    StaticDiscovery,
    load_static_config,
    read_model_keys,
    routes_from_static,
)
from modelplane.gateway.routing.routes import RoutingTable
from tests.unit.gateway.test_kubernetes_discovery import (
    endpoint_slice,
    llmdeployment,
    owners,
    service,
)

REF = SecretRef("llm", "chat-keys", "keys")


def owner(namespace: str, name: str, created: str, uid: str = "u") -> Owner:
    return Owner(namespace, name, uid, created, None)


@pytest.mark.parametrize(
    ("managed", "reference", "says"),
    [
        (False, ("chat", "uid-chat"), "lacks the label app.kubernetes.io/managed-by"),
        (True, None, "no owner reference to a modelplane.io/v1alpha1 LLMDeployment"),
        (True, ("ghost", "uid-ghost"), "its owner, LLMDeployment llm/ghost, does not exist"),
        (True, ("chat", "uid-other"), "uid is not that of LLMDeployment llm/chat"),
        (True, ("chat", "uid-chat"), None),
    ],
)
def test_a_service_is_trusted_only_with_the_label_and_a_live_owner(
    managed: bool, reference: tuple[str, str] | None, says: str | None
) -> None:
    reason = untrusted_reason("llm", managed, reference, owners(llmdeployment("chat")))
    assert reason == says if says is None else says in (reason or "")


def test_owner_references_to_other_kinds_or_versions_do_not_count() -> None:
    obj = service("chat", "chat")
    refs = obj["metadata"]["ownerReferences"]
    refs[0]["apiVersion"] = f"{contract.GROUP}/v1beta9"
    refs.append({"apiVersion": "apps/v1", "kind": "Deployment", "name": "chat", "uid": "x"})
    parsed = model_service(obj)
    assert parsed is not None and parsed.owner_reference is None


def test_the_first_llmdeployment_created_keeps_a_model_name() -> None:
    early = owner("team-b", "chat", "2026-01-01T00:00:00Z")
    late = owner("team-a", "chat", "2026-02-01T00:00:00Z")
    same_second = owner("team-a", "chat2", "2026-01-01T00:00:00Z")
    winners, conflicts = claim_model_names({"chat": {late, early, same_second}, "solo": {late}})
    assert winners == {"chat": same_second, "solo": late}  # a tie goes by namespace, then name
    (conflict,) = conflicts
    assert (conflict.model, conflict.refused) == ("chat", (early, late))


def test_routes_join_only_trusted_services_of_the_names_owner_with_its_key() -> None:
    first = llmdeployment("chat", "team-a", created="2026-01-01T00:00:00Z", key_secret="k")
    later = llmdeployment("chat", "team-0", created="2026-02-01T00:00:00Z")
    forged = service("evil", "llama", uid="stolen")
    services = {
        ("team-a", "chat"): model_service(service("chat", "llama", namespace="team-a")),
        ("team-0", "chat"): model_service(service("chat", "llama", namespace="team-0")),
        ("llm", "evil"): model_service(forged),
    }
    slices = {
        ("llm", "s"): slice_endpoints(endpoint_slice("s", "evil", [("10.9.9.9", True, None)]))
    }
    key = KeyReading(key="sk-model")
    found = routes_from_cluster(
        {k: v for k, v in services.items() if v is not None},
        {k: v for k, v in slices.items() if v is not None},
        owners(first, later),
        {SecretRef("team-a", "k", "keys"): key},
    )
    route = found.routes["llama"]
    assert route.upstreams == () and route.upstream_key == "sk-model"
    assert [(d.namespace, d.name) for d in route.demand] == [("team-a", "chat")]
    assert [str(o) for c in found.conflicts for o in c.refused] == ["team-0/chat"]
    assert "does not exist" in found.untrusted[("llm", "evil")]
    # Without the key read yet, the model answers 503 rather than sending none.
    pending = routes_from_cluster(
        {("team-a", "chat"): services[("team-a", "chat")]},  # type: ignore[dict-item]
        {},
        owners(first),
    )
    assert pending.routes["llama"].upstream_key_problem == "Secret team-a/k not read yet"


def test_the_key_is_the_first_key_line_of_the_secret() -> None:
    def data(text: str) -> dict[str, Any]:
        return {"keys": base64.b64encode(text.encode()).decode()}

    assert key_from_secret(data("\n# rotated monthly\n  sk-1 \nsk-0\n"), REF).key == "sk-1"
    assert key_from_secret(data("# none\n\n"), REF).problem == (
        "Secret llm/chat-keys key 'keys' holds no API key"
    )
    assert (
        key_from_secret({"other": "eA=="}, REF).problem == "Secret llm/chat-keys has no key 'keys'"
    )
    assert key_from_secret({"keys": "//79"}, REF).problem == (
        "Secret llm/chat-keys key 'keys' is not UTF-8 text"
    )
    assert key_from_secret(None, REF).problem is not None


def test_a_transient_failure_keeps_the_last_key_and_a_revocation_does_not() -> None:
    known = {REF: KeyReading(key="sk-1")}
    timeout = KeyReading(problem="reading: ReadTimeoutError", transient=True)
    assert merge_readings(known, {REF: timeout}) == known
    gone = KeyReading(problem="Secret llm/chat-keys does not exist")
    assert merge_readings(known, {REF: gone}) == {REF: gone}


def test_llmdeployment_key_ref_defaults_to_the_keys_field() -> None:
    parsed = owner_of(llmdeployment("chat", key_secret="chat-keys"))
    assert parsed is not None and parsed.key_ref == SecretRef("llm", "chat-keys", "keys")
    assert owner_of({"metadata": {"name": "x"}}) is None  # no uid: not an object of the API


def test_repeated_key_headers_are_found() -> None:
    def scope(*headers: tuple[bytes, bytes]) -> dict[str, Any]:
        return {"headers": list(headers)}

    assert repeated_credential_header(scope((b"authorization", b"Bearer a"))) is None
    twice = scope((b"authorization", b"Bearer a"), (b"authorization", b"Bearer b"))
    assert repeated_credential_header(twice) == "authorization"
    assert repeated_credential_header(scope((b"api-key", b"a"), (b"api-key", b"b"))) == "api-key"
    assert first_key("#c\n\n k \n") == "k" and first_key("") is None


def test_static_key_files_are_read_from_the_config_folder_and_must_hold_a_key(
    tmp_path: Path,
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "chat.key").write_text("sk-chat\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "models:\n"
        "  chat: {upstreams: [http://a:1], upstreamApiKeyFile: keys/chat.key}\n"
        "  open: {upstreams: [http://b:1]}\n"
    )
    config = load_static_config(path)
    assert read_model_keys(config) == {"chat": "sk-chat"}
    routes = routes_from_static(config, ["http://a:1"], {"chat": "sk-chat"})
    assert routes["chat"].upstream_key == "sk-chat" and routes["open"].upstream_key is None
    assert "sk-chat" not in repr(routes["chat"])  # never in a log line
    assert routes_from_static(config, [], {})["chat"].upstream_key_problem is not None

    (tmp_path / "keys" / "chat.key").write_text("# empty\n")
    with pytest.raises(ConfigError, match=r"models\.chat\.upstreamApiKeyFile: .* holds no key"):
        StaticDiscovery(RoutingTable(), path=path)
    (tmp_path / "keys" / "chat.key").unlink()
    with pytest.raises(ConfigError, match=r"cannot read upstream API key file .*chat\.key"):
        read_model_keys(load_static_config(path))
