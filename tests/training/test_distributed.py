"""`lapo.training.distributed` on two real ranks (torchrun, gloo): gathers, agreement checks, work
on the main process only (its result reaches every rank, its failure stops every rank), and
the engine environment; and on one process, where every helper is a no-op."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from lapo.paths import REPO_ROOT
from lapo.training import distributed

pytestmark = pytest.mark.timeout(180)

SCRIPT = textwrap.dedent('''
    import json, os, sys
    from pathlib import Path
    from lapo.training import distributed as d

    def fail():
        raise ValueError("main broke")

    def main():
        rank, world = d.init(cpu=True, timeout_s=60)
        out = {"rank": rank, "world": world, "main": d.is_main()}
        out["exchange"] = d.exchange([rank] * (rank + 1))
        d.check_same("same", "a value")
        try:
            d.check_same(rank, "the rank")
        except RuntimeError as exc:
            out["differs"] = str(exc)
        out["on_main"] = d.on_main(lambda: os.getpid(), what="a pid")
        try:
            d.on_main(fail, what="the failing step")
        except Exception as exc:
            out["failure"] = f"{type(exc).__name__}: {exc}"
        with d.engine_env():
            out["hidden"] = [k for k in ("RANK", "WORLD_SIZE", "MASTER_PORT") if k in os.environ]
        out["restored"] = os.environ["RANK"] == str(rank)
        d.barrier()
        Path(sys.argv[1], f"rank{rank}.json").write_text(json.dumps(out))
        d.close()

    if __name__ == "__main__":
        main()
''')


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> dict[int, dict]:
    folder = tmp_path_factory.mktemp("dist")
    script = folder / "ranks.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script), str(folder)],
                          capture_output=True, text=True, timeout=150, cwd=REPO_ROOT, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(folder.glob("rank*.json"))]
    return {r["rank"]: r for r in results}


@pytest.mark.e2e  # torchrun: two processes
def test_two_ranks_gather_in_rank_order(ranks) -> None:
    assert sorted(ranks) == [0, 1]
    assert [ranks[r]["world"] for r in (0, 1)] == [2, 2]
    assert [ranks[r]["main"] for r in (0, 1)] == [True, False]
    # Rank 0's item, then rank 1's two; each rank learns where its own start.
    assert ranks[0]["exchange"] == [[0, 1, 1], 0]
    assert ranks[1]["exchange"] == [[0, 1, 1], 1]


@pytest.mark.e2e  # torchrun: two processes
def test_a_value_that_differs_between_ranks_fails_on_every_rank(ranks) -> None:
    for r in (0, 1):
        assert ranks[r]["differs"] == "the rank differs between ranks: [0, 1]"


@pytest.mark.e2e  # torchrun: two processes
def test_main_only_work_reaches_every_rank_and_so_does_its_failure(ranks) -> None:
    assert ranks[0]["on_main"] == ranks[1]["on_main"]  # the main process's pid, on both
    assert ranks[0]["failure"] == "ValueError: main broke"
    assert ranks[1]["failure"] == ("RuntimeError: the failing step failed on the main "
                                   "process: ValueError: main broke")


@pytest.mark.e2e  # torchrun: two processes
def test_engine_env_hides_the_launcher_variables(ranks) -> None:
    for r in (0, 1):
        assert ranks[r]["hidden"] == [] and ranks[r]["restored"] is True


def test_one_process_is_world_size_1() -> None:
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.exchange(["a", "b"]) == (["a", "b"], 0)
    assert distributed.all_gather(3) == [3]
    assert distributed.on_main(lambda x: x + 1, 1, what="adding") == 2
    distributed.check_same(object(), "anything")  # one rank always agrees with itself
    distributed.barrier()
    distributed.close()  # no group: nothing to leave
