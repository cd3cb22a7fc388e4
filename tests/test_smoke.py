from tests.conftest import FHIR_JSON
from tests.factories import patient


async def test_create_then_read(client, auth):
    created = await client.post("/Patient", json=patient("1"), headers={**auth, **FHIR_JSON})
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    got = await client.get(f"/Patient/{pid}", headers=auth)
    assert got.status_code == 200
    assert got.json()["meta"]["versionId"] == "1"
