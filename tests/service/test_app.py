"""The app without an engine: liveness, readiness, auth and error shapes (fast)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lapo.service.app import create_app
from lapo.service.settings import Settings


@pytest.fixture
def client(tmp_path):
    settings = Settings(model=tmp_path, api_keys="k1,k2")
    with TestClient(create_app(settings, start_engine=False)) as c:
        yield c


def test_health_answers_without_engine(client) -> None:
    assert client.get("/health").json() == {"status": "ok"}


def test_ready_is_503_until_the_engine_serves(client) -> None:
    r = client.get("/ready")
    assert r.status_code == 503 and r.headers["retry-after"]
    assert r.json()["error"]["code"] == "model_not_ready"


@pytest.mark.parametrize("auth", [None, "Bearer nope", "Basic k1", "Bearer k1x"])
def test_bad_keys_get_401_without_echo(client, auth) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = client.post("/v1/chat/completions", headers=headers,
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 401
    body = r.json()["error"]
    assert body["type"] == "authentication_error" and body["code"] == "invalid_api_key"
    assert "nope" not in r.text and "k1" not in r.text


@pytest.mark.parametrize("key", ["k1", "k2"])
def test_good_key_passes_auth_then_waits_for_engine(client, key) -> None:
    r = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                    json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"


def test_invalid_json_is_400(client) -> None:
    r = client.post("/v1/chat/completions", headers={"Authorization": "Bearer k1",
                                                     "content-type": "application/json"},
                    content=b"{not json")
    assert r.status_code == 400
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def test_unknown_route_is_openai_shaped_404(client) -> None:
    r = client.get("/v1/nothing")
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_settings_from_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("LAPO_PORT", "9123")
    monkeypatch.setenv("LAPO_MODEL", str(tmp_path))
    monkeypatch.setenv("LAPO_API_KEYS", "sk-alpha-123, sk-beta-456")
    s = Settings()
    assert s.port == 9123 and s.model == tmp_path
    assert [k.get_secret_value() for k in s.api_keys] == ["sk-alpha-123", "sk-beta-456"]
    assert "sk-alpha" not in repr(s)  # secrets never printed


def test_openapi_documents_the_lapo_fields(client) -> None:
    schema = client.get("/openapi.json").json()
    props = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert "LAPO" in props["reasoning_budget"]["description"]
    assert "budget_enforcement" in props


@pytest.fixture
def serving(tmp_path):
    """The app with a scripted fake engine's handle installed (no vLLM engine runs)."""
    from fake_engine import FakeEngine

    from lapo.service.state import service_state

    settings = Settings(model=tmp_path, api_keys="k1")
    app = create_app(settings, start_engine=False)
    with TestClient(app, headers={"Authorization": "Bearer k1"}) as c:
        service_state(app).registry.install(FakeEngine({}).handle(version="v7"))
        yield c, service_state(app)


def test_ready_and_models_name_the_served_version(serving) -> None:
    client, _ = serving
    r = client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "model": "tiny", "version": "v7", "in_flight": 0,
                        "queued": 0, "max_concurrency": 64, "max_queue": 256}
    card = client.get("/v1/models").json()["data"][0]
    assert (card["id"], card["version"], card["object"]) == ("tiny", "v7", "model")
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize(("change", "code"), [
    ({"shutting_down": True}, "shutting_down"),
    ({"load_error": "OSError: gone"}, "model_load_failed"),
])
def test_not_ready_says_why(serving, change, code) -> None:
    client, state = serving
    for name, value in change.items():
        setattr(state, name, value)
    r = client.get("/ready")
    assert r.status_code == 503 and r.json()["error"]["code"] == code
    assert client.get("/v1/models").status_code == 200  # the model list still answers
