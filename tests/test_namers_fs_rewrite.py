"""io.l5d.fs and in-place rewrites: a file caught half-written must not fail requests.

`echo 10.0.0.2 80 > file` truncates first and writes after; a poll in between reads an
empty file (or a partial, malformed line). The namer keeps the previous addresses when a
file that had addresses first reads empty or malformed, and believes it when the next poll
reads the same. Real files, a real event loop, the namer's own poller.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import uvloop

from fastmesh.namers.fs import FsNamer
from fastmesh.naming import AddrBound, AddrFailed, Path as NamePath


def run(coro):
    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(asyncio.wait_for(coro, 10))
    finally:
        loop.close()


def shown(value) -> list[str]:
    assert isinstance(value, AddrBound), value
    return sorted(f"{a.host}:{a.port}" for a in value.addresses)


def watch(path: Path, poll: float = 0.05):
    """An FsNamer polling every `poll` s, and a recorder of every state its AddrVar takes."""
    fs = FsNamer(str(path.parent), poll_interval=poll)
    fs.load_now()
    var = fs.lookup(NamePath.utf8(path.name)).value.addr
    states = []
    var.observe(states.append)
    return fs, var, states


async def until(predicate, within: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > within:
            raise AssertionError(f"not true within {within}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def test_truncated_then_written_file_never_shows_empty(tmp_path: Path) -> None:
    # The scans are driven by hand so one lands exactly between truncate and write.
    target = tmp_path / "web"
    target.write_text("10.0.0.1 80\n")
    fs, var, states = watch(target)
    with open(target, "w") as fh:
        fh.flush()
        assert target.stat().st_size == 0
        fs.load_now()                          # a poll sees the truncated file
        assert shown(var.value) == ["10.0.0.1:80"]
        fh.write("10.0.0.2 80\n")
    fs.load_now()
    assert shown(var.value) == ["10.0.0.2:80"]
    assert [shown(s) for s in states] == [["10.0.0.2:80"]]


def test_partial_line_is_held_back(tmp_path: Path) -> None:
    target = tmp_path / "web"
    target.write_text("10.0.0.1 80\n")
    fs, var, states = watch(target)
    with open(target, "w") as fh:
        fh.write("10.0.0.")
        fh.flush()
        fs.load_now()                          # half a line on disk
        assert shown(var.value) == ["10.0.0.1:80"]
        fh.write("2 80\n")
    fs.load_now()
    assert [shown(s) for s in states] == [["10.0.0.2:80"]]


def test_same_suspicious_content_twice_is_believed(tmp_path: Path) -> None:
    target = tmp_path / "web"
    target.write_text("10.0.0.1 80\n")
    fs, var, states = watch(target)
    target.write_text("")
    fs.load_now()
    assert shown(var.value) == ["10.0.0.1:80"], "held for one scan"
    fs.load_now()
    assert isinstance(var.value, AddrBound) and not var.value.addresses
    target.write_text("10.0.0.1 8o\n")
    fs.load_now()                              # nothing to protect: it is empty already
    assert var.value == AddrFailed("malformed address: 10.0.0.1 8o")


def test_watcher_in_a_running_loop(tmp_path: Path) -> None:
    target = tmp_path / "web"
    target.write_text("10.0.0.1 80\n")

    async def scenario() -> None:
        fs, var, states = watch(target)
        fs.start()
        with open(target, "w") as fh:          # empty on disk for about two polls
            fh.flush()
            await asyncio.sleep(0.04)
            fh.write("10.0.0.2 80\n")
        await until(lambda: isinstance(var.value, AddrBound) and shown(var.value) == ["10.0.0.2:80"], 1.0)
        fs.close()
        assert all(isinstance(s, AddrBound) and s.addresses for s in states), states

    run(scenario())


def test_an_emptied_file_is_believed_one_poll_later(tmp_path: Path) -> None:
    target = tmp_path / "web"
    target.write_text("10.0.0.1 80\n")

    async def scenario() -> None:
        fs, var, states = watch(target, poll=0.1)
        fs.start()
        target.write_text("# drained for maintenance\n")
        took = await until(lambda: isinstance(var.value, AddrBound) and not var.value.addresses, 1.0)
        fs.close()
        assert took < 0.6

    run(scenario())


def test_malformed_file_is_believed_when_it_stays(tmp_path: Path) -> None:
    target = tmp_path / "web"
    target.write_text("10.0.0.1 80\n")

    async def scenario() -> None:
        fs, var, states = watch(target, poll=0.1)
        fs.start()
        target.write_text("10.0.0.1 eighty\n")
        await until(lambda: isinstance(var.value, AddrFailed), 1.0)
        assert var.value == AddrFailed("malformed address: 10.0.0.1 eighty")
        target.write_text("10.0.0.3 81\n")       # and a good file is applied at once
        took = await until(lambda: isinstance(var.value, AddrBound), 1.0)
        fs.close()
        assert shown(var.value) == ["10.0.0.3:81"] and took < 0.35

    run(scenario())


def test_a_new_empty_file_is_not_held(tmp_path: Path) -> None:
    # Nothing to protect: a file that never had addresses shows its state at once.
    (tmp_path / "web").write_text("")
    fs = FsNamer(str(tmp_path))
    fs.load_now()
    value = fs.lookup(NamePath.utf8("web")).value.addr.value
    assert isinstance(value, AddrBound) and not value.addresses


def test_churning_bad_content_is_believed_after_the_hold_limit(tmp_path: Path, monkeypatch) -> None:
    # A file that keeps changing between bad states is not held back forever.
    import fastmesh.namers.fs as fs_module
    monkeypatch.setattr(fs_module, "HOLD_MAX_S", 0.2)
    target = tmp_path / "web"
    target.write_text("10.0.0.1 80\n")
    fs, var, states = watch(target)
    started = time.monotonic()
    for i in range(200):  # bounded: about 0.2 s of churn at most needed
        target.write_text(f"bad line {i}\n")
        fs.load_now()
        if isinstance(var.value, AddrFailed):
            break
        time.sleep(0.01)
    assert isinstance(var.value, AddrFailed), "still held after the limit"
    assert 0.2 <= time.monotonic() - started < 1.5
