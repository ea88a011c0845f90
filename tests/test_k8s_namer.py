"""The io.l5d.k8s namer against the fake API server (spec §5.1): real HTTP on loopback.

Each test runs its own event loop with a FakeKubeApi loaded with the fixtures of
tests/data/k8s (a v1.33 cluster's `default` namespace: `myservice`, `l5d`, `world-v1`,
`hello`, `kubernetes`) and a K8sNamer talking to it, as `kubectl proxy` would be talked to.
The expected answers come from the lookup rules (spec §5.1) applied to those objects.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from k8s_fake import fixture, status_body
from k8s_harness import Env, P, addrs, endpoints, run, with_subsets

from fastmesh.namers import build_namer
from fastmesh.namers.k8s import K8sNamer, TooManyNamesError
from fastmesh.namers.k8s_watch import Backoff
from fastmesh.naming import PENDING, AddrBound, AddrNeg, BoundName, Leaf, Neg

MYSERVICE_READY = ["10.180.18.2:443", "10.180.3.17:443", "10.180.5.22:443"]


def leaf(tree) -> BoundName:
    assert isinstance(tree, Leaf) and isinstance(tree.value, BoundName), tree
    return tree.value


# --- lookups -----------------------------------------------------------------------------------------


def test_named_port_binds_ready_addresses_with_node_names():
    async def body():
        async with Env() as env:
            assert env.namer.lookup(P("/default/https/myservice/a/b")) is PENDING
            b = leaf(await env.resolve("/default/https/myservice/a/b"))
            assert b.id.show == "/#/io.l5d.k8s/default/https/myservice"
            assert b.residual.show == "/a/b"
            # 10.180.6.6 is in notReadyAddresses: never an endpoint
            assert addrs(b.addr.value) == MYSERVICE_READY
            nodes = {a.host: a.meta.get("nodeName") for a in b.addr.value.addresses}
            assert nodes == {"10.180.3.17": "node-4", "10.180.5.22": "node-9", "10.180.18.2": "node-7"}
            get = env.fake.requests[0]
            assert (get.path, get.query) == ("/api/v1/namespaces/default/endpoints/myservice", {})
            # the watch continues from the object's resourceVersion, with bookmarks
            await env.fake.wait_for(lambda: env.fake.watch_count("myservice") == 1)
            w = [r for r in env.fake.requests if r.is_watch][0]
            assert w.path == "/api/v1/watch/namespaces/default/endpoints/myservice"
            assert w.query["resourceVersion"] == "3171390"
            assert w.query["allowWatchBookmarks"] == "true"
            assert int(w.query["timeoutSeconds"]) > 0

    run(body)


def test_segments_are_lowercased_and_one_watch_is_shared():
    async def body():
        async with Env() as env:
            a = leaf(await env.resolve("/Default/HTTP/World-V1/Rest/Of"))
            b = leaf(await env.resolve("/default/http/world-v1"))
            c = leaf(await env.resolve("/DEFAULT/admin/world-v1/x"))
            assert a.id.show == b.id.show == "/#/io.l5d.k8s/default/http/world-v1"
            assert a.residual.show == "/Rest/Of"  # the residual keeps its case
            assert a.addr is b.addr  # one AddrVar per name
            assert c.id.show == "/#/io.l5d.k8s/default/admin/world-v1"
            await asyncio.sleep(0.05)
            assert env.fake.get_count("world-v1") == 1
            assert env.fake.watch_count("world-v1") == 1

    run(body)


def test_short_paths_and_impossible_names_are_neg_without_asking_the_api():
    async def body():
        async with Env() as env:
            for path in ["/default", "/default/http", "/default/http/world:7778",
                         "/default/http/-bad-", "/bad_ns/http/world"]:
                assert env.namer.lookup(P(path)) is Neg, path
            await asyncio.sleep(0.05)
            assert env.fake.requests == []

    run(body)


def test_missing_port_name_and_missing_subsets_are_neg():
    async def body():
        async with Env() as env:
            assert await env.resolve("/default/grpc/myservice") is Neg  # not on the Service
            assert await env.resolve("/default/http/hello") is Neg  # no `subsets` key at all
            assert await env.resolve("/default/http/nosuch") is Neg  # 404
            # unnamed-style endpoints without nodeName: bound, no metadata
            k = leaf(await env.resolve("/default/https/kubernetes"))
            assert addrs(k.addr.value) == ["172.18.0.2:6443"]
            assert [dict(a.meta) for a in k.addr.value.addresses] == [{}]

    run(body)


def test_unready_pods_bind_an_empty_address_set_and_ports_are_a_union():
    async def body():
        async with Env() as env:
            env.fake.put("endpoints", endpoints("starting", [], {"http": 8080},
                                                not_ready=[("10.1.1.5", "n1"), ("10.1.2.5", "n2")]))
            b = leaf(await env.resolve("/default/http/starting"))
            assert b.addr.value == AddrBound(frozenset())  # bound, no hosts: no fallback
            # world-v1: one IP ready on `http`, not ready on `admin` (two subsets). The
            # port map and the endpoints are unions over subsets (linkerd's rule), so
            # `admin` binds the ready IP too.
            admin = leaf(await env.resolve("/default/admin/world-v1"))
            assert addrs(admin.addr.value) == ["10.180.7.14:9991"]

    run(body)


def test_legacy_2015_server_shape():
    async def body():
        async with Env(lists=("legacy-2015-gke-endpoints-list-srv.json",)) as env:
            # "subsets": null → Neg; no nodeName → no metadata
            assert await env.resolve("/srv/http/empty-subset") is Neg
            s = leaf(await env.resolve("/srv/http/sessions"))
            assert s.addr.value.addresses and all(not a.meta for a in s.addr.value.addresses)

    run(body)


def test_numbered_port_reads_the_service():
    service = {
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
                           {"name": "admin", "port": 9990, "targetPort": "admin-port"},
                           {"name": "plain", "port": 7000},
                           {"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}],
                 "selector": {"app": "web"}, "clusterIP": "10.96.0.20", "type": "ClusterIP"},
        "status": {"loadBalancer": {}},
    }

    async def body():
        async with Env() as env:
            env.fake.put("services", service)
            env.fake.put("endpoints", endpoints("web", [("10.1.1.7", "n1"), ("10.1.2.7", "n2")],
                                                {"http": 8080, "admin-port": 9991}))
            assert env.namer.lookup(P("/default/80/web")) is PENDING
            b = leaf(await env.resolve("/default/80/web/r"))
            assert b.id.show == "/#/io.l5d.k8s/default/80/web" and b.residual.show == "/r"
            assert addrs(b.addr.value) == ["10.1.1.7:8080", "10.1.2.7:8080"]
            # a named targetPort follows the named-port rule
            assert addrs(leaf(await env.resolve("/default/9990/web")).addr.value) == \
                ["10.1.1.7:9991", "10.1.2.7:9991"]
            # no targetPort: the port itself, even though Endpoints do not list it
            assert addrs(leaf(await env.resolve("/default/7000/web")).addr.value) == \
                ["10.1.1.7:7000", "10.1.2.7:7000"]
            assert await env.resolve("/default/81/web") is Neg
            assert await env.resolve("/default/53/web") is Neg  # UDP only
            assert env.fake.get_count("/services/web") == 1
            # A Service without `status` maps nothing (linkerd's rule) → Neg
            partial = dict(service)
            partial.pop("status")
            before = env.changes
            env.fake.put("services", partial)
            await env.until(lambda: env.namer.lookup(P("/default/80/web")) is Neg, what="80 → Neg")
            assert env.changes > before
            assert b.addr.value is AddrNeg

    run(body)


def test_label_selector_names_take_the_label_value():
    async def body():
        async with Env(label_selector="version") as env:
            env.fake.put("endpoints", endpoints("world", [("10.1.1.9", "n1")], {"http": 7778},
                                                labels={"app": "world", "version": "v1"}))
            assert env.namer.lookup(P("/default/http/world")) is Neg  # label value missing
            b = leaf(await env.resolve("/default/http/World/V1/rest"))
            assert b.id.show == "/#/io.l5d.k8s/default/http/world/v1"
            assert b.residual.show == "/rest"
            assert addrs(b.addr.value) == ["10.1.1.9:7778"]
            get = [r for r in env.fake.requests if r.path.endswith("/endpoints/world")][0]
            assert get.query == {"labelSelector": "version=v1"}
            assert await env.resolve("/default/http/world/v2") is Neg
            assert env.namer.lookup(P("/default/http/world/not%20a%20label")) is Neg  # never asked
            # relabel v1 → v2: the v1 watch sees it leave, the v2 watch sees it arrive
            env.fake.put("endpoints", endpoints("world", [("10.1.1.9", "n1")], {"http": 7778},
                                                labels={"app": "world", "version": "v2"}))
            await env.until(lambda: env.namer.lookup(P("/default/http/world/v1")) is Neg, what="v1 Neg")
            await env.until(lambda: isinstance(env.namer.lookup(P("/default/http/world/v2")), Leaf),
                            what="v2 bound")
            await env.fake.wait_for(lambda: any(r.is_watch and r.query.get("labelSelector") == "version=v2"
                                                for r in env.fake.requests))

    run(body)


# --- stabilised existence and watch events -------------------------------------------------------------


def test_watch_sequence_fixture_updates_in_place_and_flips_notify():
    seq = fixture("watch-endpoints-sequence.json")["response"]["events"]

    async def body():
        async with Env() as env:
            mine = leaf(await env.resolve("/default/https/myservice"))
            assert await env.resolve("/default/http/hello") is Neg
            assert await env.resolve("/default/http/world-v2") is Neg  # 404
            world = leaf(await env.resolve("/default/http/world-v1"))
            for name in ("myservice", "hello", "world-v2", "world-v1"):
                await env.fake.wait_for(lambda n=name: env.fake.watch_count(n) == 1)
            # the watch after a 404 asks for no resourceVersion (the server replays ADDED)
            w2 = [r for r in env.fake.requests if r.is_watch and "world-v2" in r.path][0]
            assert "resourceVersion" not in w2.query
            seen = []
            mine.addr.observe(lambda a: seen.append(a))  # as a client would
            base = env.changes

            env.fake.replay("endpoints", seq[0])  # MODIFIED: scale up
            await env.until(lambda: len(seen) == 1, what="scale-up applied")
            assert addrs(seen[-1]) == sorted(MYSERVICE_READY + ["10.180.9.31:443"])
            env.fake.replay("endpoints", seq[1])  # MODIFIED: not-ready → ready
            await env.until(lambda: len(seen) == 2, what="ready applied")
            assert "10.180.6.6:443" in addrs(seen[-1])
            assert env.changes == base  # address-only changes: no re-bind
            assert leaf(env.namer.lookup(P("/default/https/myservice"))).addr is mine.addr

            env.fake.replay("endpoints", seq[2])  # MODIFIED: hello empty → populated
            await env.until(lambda: isinstance(env.namer.lookup(P("/default/http/hello")), Leaf),
                            what="hello bound")
            assert env.changes == base + 1  # Neg → bound tells the listeners
            assert addrs(leaf(env.namer.lookup(P("/default/http/hello"))).addr.value) == ["10.180.4.9:7777"]

            env.fake.replay("endpoints", seq[3])  # ADDED world-v2, no subsets: still Neg
            await env.until(lambda: env.watch("world-v2").obj is not None, what="world-v2 added")
            assert env.namer.lookup(P("/default/http/world-v2")) is Neg
            assert env.changes == base + 1

            env.fake.replay("endpoints", seq[4])  # BOOKMARK: only the resourceVersion moves
            await env.until(lambda: env.watch("myservice").resource_version == "3171455", what="bookmark")
            assert len(seen) == 2

            env.fake.replay("endpoints", seq[5])  # DELETED world-v1
            await env.until(lambda: env.namer.lookup(P("/default/http/world-v1")) is Neg, what="deleted")
            assert world.addr.value is AddrNeg and env.changes == base + 2

            # the server ends its streams (timeoutSeconds): re-watch from the bookmark
            env.fake.end_watches()
            await env.fake.wait_for(lambda: env.fake.watch_count("myservice") == 2)
            rewatch = [r for r in env.fake.requests if r.is_watch and "myservice" in r.path][-1]
            assert rewatch.query["resourceVersion"] == "3171455"
            assert env.fake.get_count("myservice") == 1  # no relist for a clean end

    run(body)


def test_stale_events_are_ignored():
    async def body():
        async with Env() as env:
            mine = leaf(await env.resolve("/default/https/myservice"))
            await env.fake.wait_for(lambda: env.fake.watch_count("myservice") == 1)
            seen = []
            mine.addr.observe(lambda a: seen.append(addrs(a)))
            old = fixture("endpoints-get-myservice.json")
            stale = with_subsets(old, [{"addresses": [{"ip": "10.9.9.9"}], "ports": [{"name": "https", "port": 443}]}])
            stale["metadata"]["resourceVersion"] = "3171000"  # older than what we have
            env.fake.replay("endpoints", {"type": "MODIFIED", "object": stale})
            newer = with_subsets(old, [{"addresses": [{"ip": "10.8.8.8"}], "ports": [{"name": "https", "port": 443}]}])
            newer["metadata"]["resourceVersion"] = "3171500"
            env.fake.replay("endpoints", {"type": "MODIFIED", "object": newer})
            await env.until(lambda: seen, what="newer applied")
            assert seen == [["10.8.8.8:443"]]

    run(body)


def test_scale_to_zero_is_neg_and_back():
    async def body():
        async with Env() as env:
            b = leaf(await env.resolve("/default/incoming/l5d"))
            assert len(b.addr.value.addresses) == 4
            base = env.changes
            l5d = [i for i in fixture("endpoints-list-default.json")["items"] if i["metadata"]["name"] == "l5d"][0]
            env.fake.put("endpoints", with_subsets(l5d, []))
            await env.until(lambda: env.namer.lookup(P("/default/incoming/l5d")) is Neg, what="neg")
            assert b.addr.value is AddrNeg and env.changes == base + 1
            env.fake.put("endpoints", with_subsets(l5d, None))  # `subsets` gone entirely
            await asyncio.sleep(0.05)
            assert env.namer.lookup(P("/default/incoming/l5d")) is Neg and env.changes == base + 1
            env.fake.put("endpoints", l5d)
            await env.until(lambda: env.changes == base + 2, what="bound again")
            again = leaf(env.namer.lookup(P("/default/incoming/l5d")))
            assert again.addr is b.addr and len(again.addr.value.addresses) == 4

    run(body)


def test_404_then_created_notifies_listeners():
    async def body():
        async with Env() as env:
            assert await env.resolve("/default/http/late") is Neg
            get = [r for r in env.fake.requests if r.path.endswith("/endpoints/late")][0]
            assert not get.is_watch
            await env.fake.wait_for(lambda: env.fake.watch_count("late") == 1)
            base = env.changes
            env.fake.put("endpoints", endpoints("late", [("10.1.3.3", "n3")], {"http": 8080}))
            await env.until(lambda: env.changes == base + 1, what="listeners told")
            assert addrs(leaf(env.namer.lookup(P("/default/http/late"))).addr.value) == ["10.1.3.3:8080"]
            env.fake.delete("endpoints", "default", "late")
            await env.until(lambda: env.namer.lookup(P("/default/http/late")) is Neg, what="deleted")
            assert env.changes == base + 2

    run(body)


# --- framing ---------------------------------------------------------------------------------------------


def test_document_split_across_chunks_and_two_in_one_chunk():
    async def body():
        async with Env() as env:
            b = leaf(await env.resolve("/default/incoming/l5d"))
            await env.fake.wait_for(lambda: env.fake.watch_count("l5d") == 1)
            seen = []
            b.addr.observe(lambda a: seen.append(addrs(a)))
            sent = len(env.fake.watch_chunks)
            env.fake.split_next = 1
            env.fake.put("endpoints", endpoints("l5d", [("10.2.0.1", "n1")], {"incoming": 4141}))
            await env.until(lambda: seen == [["10.2.0.1:4141"]], what="split document applied")
            halves = env.fake.watch_chunks[sent:]
            assert len(halves) == 2 and not halves[0].endswith(b"\n") and halves[1].endswith(b"\n")
            assert json.loads(halves[0] + halves[1])["type"] == "MODIFIED"

            sent = len(env.fake.watch_chunks)
            events_before = env.watch("l5d").stats.events
            env.fake.coalesce_next = 2
            env.fake.put("endpoints", endpoints("l5d", [("10.2.0.2", "n1")], {"incoming": 4141}))
            env.fake.put("endpoints", endpoints("l5d", [("10.2.0.3", "n1")], {"incoming": 4141}))
            await env.until(lambda: seen[-1] == ["10.2.0.3:4141"], what="coalesced documents applied")
            chunk = env.fake.watch_chunks[sent:]
            assert len(chunk) == 1 and chunk[0].count(b"\n") == 2
            assert env.watch("l5d").stats.events == events_before + 2

    run(body)


# --- errors and recovery ---------------------------------------------------------------------------------


def _expiry_variants():
    doc = fixture("watch-endpoints-410-expired.json")
    out = [("expired-410", doc["response"]["events"][0]["object"])]
    for v in doc["variants"]:
        if "events" in v:
            out.append((v["name"], v["events"][0]["object"]))
    return out


@pytest.mark.parametrize("name,status", _expiry_variants(), ids=[n for n, _ in _expiry_variants()])
def test_error_event_relists_and_rewatches(name, status):
    async def body():
        async with Env() as env:
            b = leaf(await env.resolve("/default/incoming/l5d"))
            await env.fake.wait_for(lambda: env.fake.watch_count("l5d") == 1)
            # the next watch gets HTTP 200 + this ERROR event, then the end of the stream
            env.fake.fail(lambda r: r.is_watch, 200, status, as_error_event=True)
            env.fake.end_watches()
            await env.fake.wait_for(lambda: env.fake.watch_count("l5d") == 3)
            paths = [(r.is_watch, r.query.get("resourceVersion")) for r in env.fake.requests]
            # GET, watch(rv) → ended; watch(rv) → ERROR; GET again; watch without rv
            assert paths == [(False, None), (True, "3171388"), (True, "3171388"), (False, None),
                             (True, None)]
            assert env.watch("l5d").stats.relists == 1
            # still current afterwards
            env.fake.put("endpoints", endpoints("l5d", [("10.3.0.1", "n1")], {"incoming": 4141}))
            await env.until(lambda: addrs(b.addr.value) == ["10.3.0.1:4141"], what="update after relist")

    run(body)


def test_expired_resource_version_from_the_server_history():
    """The fake's own 410: a watch from a resourceVersion older than its history."""
    async def body():
        async with Env() as env:
            b = leaf(await env.resolve("/default/incoming/l5d"))
            await env.fake.wait_for(lambda: env.fake.watch_count("l5d") == 1)
            env.fake.compact()
            env.fake.end_watches()
            await env.fake.wait_for(lambda: env.fake.get_count("l5d") == 2 and env.fake.watch_count("l5d") == 3)
            assert env.fake.watch_chunks[-1].startswith(b'{"type":"ADDED"')  # replayed current state
            env.fake.put("endpoints", endpoints("l5d", [("10.3.0.2", "n1")], {"incoming": 4141}))
            await env.until(lambda: addrs(b.addr.value) == ["10.3.0.2:4141"], what="update after relist")
            expired = [c for c in env.fake.watch_chunks if b'"type":"ERROR"' in c]
            assert len(expired) == 1 and b'"code":410' in expired[0]

    run(body)


def test_plain_http_410_on_the_watch_relists():
    body410 = fixture("status-410-expired-list.json")

    async def body():
        async with Env() as env:
            await env.resolve("/default/incoming/l5d")
            await env.fake.wait_for(lambda: env.fake.watch_count("l5d") == 1)
            env.fake.fail(lambda r: r.is_watch, 410, body410)
            env.fake.end_watches()
            await env.fake.wait_for(lambda: env.fake.watch_count("l5d") == 3)
            assert env.fake.get_count("l5d") == 2
            assert "resourceVersion" not in env.fake.requests[-1].query
            assert "too old" in env.watch("l5d").stats.last_error

    run(body)


def test_forbidden_and_server_errors_are_retried_with_backoff():
    forbidden = fixture("status-403-forbidden-endpointslices.json")

    async def body():
        async with Env() as env:
            env.fake.fail(lambda r: not r.is_watch, 403, forbidden, times=3)
            env.fake.fail(lambda r: r.is_watch, 500, times=2)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            assert env.namer.lookup(P("/default/incoming/l5d")) is PENDING
            b = leaf(await env.resolve("/default/incoming/l5d"))
            assert len(b.addr.value.addresses) == 4
            assert env.fake.get_count("l5d") == 4  # 3 × 403, then 200
            await env.fake.wait_for(lambda: env.fake.watch_count("l5d") == 3)  # 2 × 500, then 200
            assert env.fake.get_count("l5d") == 4  # a failed watch is retried, not relisted
            assert loop.time() - t0 < 5.0  # backoff starts at 1 ms
            assert env.watch("l5d").stats.errors == 5

    run(body)


def test_a_server_failing_every_watch_is_not_hammered():
    async def body():
        async with Env() as env:
            env.fake.fail(lambda r: r.is_watch, 200, status_body(500, "InternalError", "etcd down"),
                          times=1000, as_error_event=True)
            await env.resolve("/default/incoming/l5d")
            await asyncio.sleep(0.5)
            # each ERROR relists; the backoff doubles from 1 ms, so ~9 rounds fit in 0.5 s
            assert 3 <= env.fake.watch_count("l5d") <= 14, env.fake.watch_count("l5d")
            assert env.fake.get_count("l5d") == env.fake.watch_count("l5d")
            assert leaf(env.namer.lookup(P("/default/incoming/l5d"))).addr.value.addresses  # still served

    run(body)


def test_backoff_is_jittered_exponential_from_1ms_to_5s():
    lo = Backoff(rng=lambda: 0.0)
    hi = Backoff(rng=lambda: 1.0)
    assert [lo.next() for _ in range(3)] == [0.001, 0.001, 0.001]  # never below 1 ms
    caps = [hi.next() for _ in range(16)]
    assert caps[:4] == [0.001, 0.002, 0.004, 0.008]  # doubling
    assert caps[-1] == 5.0 and max(caps) == 5.0  # never above 5 s
    hi.reset()
    assert hi.next() == 0.001
    real = Backoff()
    assert all(0.001 <= real.next() <= 5.0 for _ in range(100))


def test_unreachable_api_stays_pending_and_recovers():
    async def body():
        async with Env(start_namer=False) as env:
            port = env.fake.port
            await env.fake.stop()  # nothing listens there now
            env.namer.start(asyncio.get_running_loop())
            assert env.namer.lookup(P("/default/incoming/l5d")) is PENDING
            await asyncio.sleep(0.3)
            assert env.namer.lookup(P("/default/incoming/l5d")) is PENDING
            assert env.watch("l5d").stats.errors >= 2
            assert "cannot connect" in env.watch("l5d").stats.last_error
            await env.fake.start("127.0.0.1", port)
            b = leaf(await env.resolve("/default/incoming/l5d", timeout=8))
            assert len(b.addr.value.addresses) == 4

    run(body, timeout=20)


def test_names_are_bounded():
    async def body():
        async with Env(max_names=3) as env:
            a = leaf(await env.resolve("/default/incoming/l5d"))
            handle = a.addr.observe(lambda _: None)
            for svc in ("myservice", "kubernetes", "world-v1", "hello"):
                await env.resolve(f"/default/http/{svc}")
            # the unobserved, least recently used names (and their watches) were dropped
            assert env.namer.object_watch("endpoints", "default", "myservice") is None
            assert env.namer.object_watch("endpoints", "default", "l5d") is not None
            assert len(env.namer.state()["names"]) == 3
            h2 = leaf(await env.resolve("/default/https/kubernetes")).addr.observe(lambda _: None)
            leaf(await env.resolve("/default/http/world-v1")).addr.observe(lambda _: None)
            with pytest.raises(TooManyNamesError):
                env.namer.lookup(P("/default/http/another"))
            handle.close()
            h2.close()

    run(body)


def test_state_page_and_close_stop_the_watches():
    async def body():
        async with Env() as env:
            await env.resolve("/default/incoming/l5d")
            state = env.namer.state()
            assert state["prefix"] == "/io.l5d.k8s" and state["port"] == env.fake.port
            (w,) = state["watches"]
            assert w["path"] == "/api/v1/namespaces/default/endpoints/l5d" and w["exists"] and w["known"]
            assert state["names"]["/default/incoming/l5d"]["shape"] == "bound"
            await env.fake.wait_for(lambda: len(env.fake.watchers) == 1)
            env.namer.close()
            await env.fake.wait_for(lambda: len(env.fake.watchers) == 0)

    run(body)


def test_build_namer_keys():
    n = build_namer("io.l5d.k8s", {"host": "kube", "port": 8002, "labelSelector": "version",
                                   "prefix": "/k8s", "experimental": False})
    assert isinstance(n, K8sNamer)
    assert (n.host, n.port, n.label_selector, n.prefix.show) == ("kube", 8002, "version", "/k8s")
    d = build_namer("io.l5d.k8s", {})
    assert (d.host, d.port, d.prefix.show, d.label_selector) == ("localhost", 8001, "/io.l5d.k8s", None)
    assert d.lookup(P("/default/http/world")) is PENDING  # not started: no I/O, pending
    d.close()
    with pytest.raises(ValueError, match="unknown key 'hots'"):
        build_namer("io.l5d.k8s", {"hots": "x"})
    with pytest.raises(ValueError, match="port must be"):
        build_namer("io.l5d.k8s", {"port": 70000})
    with pytest.raises(ValueError, match="labelSelector is the name of one label"):
        build_namer("io.l5d.k8s", {"labelSelector": "a=b"})
    assert status_body(410, "Expired", "x")["code"] == 410
