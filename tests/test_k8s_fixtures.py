"""The Kubernetes API fixtures (tests/data/k8s) and the fake server that replays them.

* The copies in tests/data/k8s are byte-identical to the team's shared originals
  (/work/shared/k8s-fixtures, see its README for provenance); skipped when that
  directory is absent (the repository's tests never need it).
* The fake API server answers as the fixtures say a real one does: a GET of an object
  from the loaded list is `endpoints-get-myservice.json`, a missing one the 404 Status,
  a watch from a compacted resourceVersion the 410 ERROR event of
  `watch-endpoints-410-expired.json`, a watch with bookmarks replays
  `watch-endpoints-sequence.json`'s events as one compact document per line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from k8s_fake import DATA, ENDPOINTS_WARNING, FakeKubeApi, fixture
from k8s_harness import run

from fastmesh.namers.k8s_api import K8sApiClient

SHARED = Path("/work/shared/k8s-fixtures")


def test_copies_match_the_shared_fixtures():
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is not present")
    ours = sorted(p.name for p in DATA.iterdir() if p.is_file())
    theirs = sorted(p.name for p in SHARED.iterdir() if p.is_file())
    assert ours == theirs
    for name in ours:
        assert (DATA / name).read_bytes() == (SHARED / name).read_bytes(), name


def test_fixture_files_are_what_the_readme_lists():
    readme = (DATA / "README.md").read_text()
    for p in DATA.glob("*.json"):
        assert f"`{p.name}`" in readme, p.name
        json.loads(p.read_text())


def test_fake_answers_like_the_fixtures():
    async def body():
        fake = await FakeKubeApi().start()
        fake.load("endpoints", fixture("endpoints-list-default.json"))
        client = K8sApiClient("127.0.0.1", fake.port)
        try:
            got = await client.get("/api/v1/namespaces/default/endpoints/myservice")
            assert got.status == 200 and got.json() == fixture("endpoints-get-myservice.json")
            assert got.headers["content-type"] == "application/json"
            assert got.headers["warning"] == ENDPOINTS_WARNING
            missing = await client.get("/api/v1/namespaces/default/endpoints/nosuch")
            assert missing.status == 404 and missing.json() == fixture("status-404-endpoints-notfound.json")
            listed = (await client.get("/api/v1/namespaces/default/endpoints")).json()
            assert listed == fixture("endpoints-list-default.json")

            # a watch from a resourceVersion the server no longer has
            fake.compact()
            expired = fixture("watch-endpoints-410-expired.json")
            events = []
            end = await client.watch("/api/v1/namespaces/default/endpoints",
                                     dict(expired["request"]["query"], watch="true"), events.append,
                                     timeout_s=5)
            assert end.status == 200 and events == expired["response"]["events"]

            # the recovery the fixture expects: watch from the list's resourceVersion
            seq = fixture("watch-endpoints-sequence.json")
            events = []
            query = dict(seq["request"]["query"], timeoutSeconds="1")
            watch = asyncio.ensure_future(client.watch(seq["request"]["path"], query, events.append,
                                                       timeout_s=5))
            await fake.wait_for(lambda: len(fake.watchers) == 1)
            for event in seq["response"]["events"]:
                fake.replay("endpoints", event)
            end = await watch  # the server's timeoutSeconds ends it cleanly
            assert end.status == 200 and end.headers["transfer-encoding"] == "chunked"
            assert events == seq["response"]["events"]
            sent = [c for c in fake.watch_chunks if c.count(b"\n") == 1 and c.endswith(b"\n")]
            assert len(sent) >= len(events)  # one document per chunk, newline-terminated
        finally:
            await fake.stop()

    run(body)
