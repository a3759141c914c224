from __future__ import annotations
import httpx, base64, json
from tests.conftest import Project, bearer, drain
from tidings.bootstrap import Services

async def test_probe(app, services: Services, project: Project) -> None:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url='http://t')
    out = []
    async def w(path, body, key=project.pk):
        r = await client.post(path, json=body, headers=bearer(key))
        out.append((path, json.dumps(body)[:80], r.status_code, r.text[:100]))
    await w("/api/client/events", [{"name": "x", "external_id": "u1", "data": {"a": "\u0000"}}])
    await w("/api/client/events", [{"name": "x\u0000", "external_id": "u2"}])
    await w("/api/client/events", [{"name": "x", "external_id": "u3", "created_at": "9999-12-31T23:59:59.9999999"}])
    await w("/api/client/events", [{"name": "x", "external_id": "u4", "created_at": "0001-01-01T00:00:00+01:00"}])
    await w("/api/client/devices", {"external_id": "u5", "device_id": "d", "os": "o"*200, "model": "m", "app_build": "1", "app_version": "1"})
    await w("/api/client/identify", {"external_id": "u6", "data": {"k\u0000": 1}})
    await w("/api/client/identify", {"external_id": "a/b", "data": {"k": 1}})
    await w("/api/client/identify", {"external_id": "u7", "data": {"k": 1e308, "j": 2**70}})
    try:
        await drain(services, timeout=5)
    except AssertionError as e:
        out.append(("drain", str(e)))
    for u in ("u1","u2","u3","u4","u5","u6","u7"):
        r = await client.get(f"/api/client/users/{u}/events", headers=bearer(project.sk))
        r2 = await client.get(f"/api/client/users/{u}", headers=bearer(project.sk))
        out.append((u, r.status_code, r2.status_code, r2.text[:80]))
    for c in ["x", base64.urlsafe_b64encode(b'["n", 99999999999999999999999, "a"]').decode(), base64.urlsafe_b64encode(b'["n", 1, "a\\u0000"]').decode(), base64.urlsafe_b64encode(b'["n", 1, "\\ud800"]').decode(), base64.urlsafe_b64encode(b'[1, "\\ud800"]').decode(),base64.urlsafe_b64encode(b'[-99999999999999999999, "a"]').decode()]:
        for p in ("/api/client/users", "/api/client/users/u7/events"):
            r = await client.get(p, params={"cursor": c}, headers=bearer(project.sk))
            out.append((p, c[:30], r.status_code, r.headers.get("content-type")))
    print("\n".join(map(str, out)))
