"""Data parallelism (distributed.py, run.py under torchrun): sharding, the merge, resume across ranks and world
sizes; end to end, 2 CPU processes (gloo) against one, and a rank killed mid-run then resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import distributed as dp
import results as result_files

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # the test process itself is never a launched rank
    ENV.pop(var, None)


# ------------------------------------------------------------------------------------------------ unit tests


def test_context_from_env():
    assert dp.context_from_env({}) == dp.DistContext(0, 1, 0) and not dp.DistContext().distributed
    ctx = dp.context_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (ctx.rank, ctx.world_size, ctx.local_rank, ctx.distributed, ctx.main) == (3, 4, 1, True, False)
    for bad in ({"RANK": "4", "WORLD_SIZE": "4"}, {"RANK": "x", "WORLD_SIZE": "2"}, {"RANK": "0", "WORLD_SIZE": "0"}):
        with pytest.raises(dp.DistributedError):
            dp.context_from_env(bad)


def test_pick_device():
    two = dp.DistContext(1, 2, 1)
    assert dp.pick_device(None, two, cuda_available=True) == "cuda:1"
    assert dp.pick_device("cuda", two, cuda_available=True) == "cuda:1"
    assert dp.pick_device(None, two, cuda_available=False) == "cpu"
    assert dp.pick_device("cpu", two, cuda_available=True) == "cpu"
    assert dp.pick_device(None, dp.DistContext(), cuda_available=True) is None  # one process: run.py as before
    with pytest.raises(dp.DistributedError, match="no CUDA"):
        dp.pick_device("cuda", two, cuda_available=False)


@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_cover_every_item_once_and_balance(world):
    todo = [[0, 2, 3, 5, 7], [], [8, 9, 11], [1, 13, 14]]
    shares = [dp.shard(todo, dp.DistContext(r, world, r)) for r in range(world)]
    for phase, items in enumerate(todo):
        assert sorted(i for share in shares for i in share[phase]) == items
    sizes = [sum(map(len, share)) for share in shares]
    assert max(sizes) - min(sizes) <= 1  # balanced over the whole run, not phase by phase
    assert dp.shard(todo, dp.DistContext(0, world, 0)) == dp.shard(todo, dp.DistContext(0, world, 0))


def rec(method, seed, index, text="x"):
    return {"method": method, "seed": seed, "index": index, "final_text": text}


def test_merge_orders_by_seed_method_index_and_drops_duplicates():
    records = [rec("latent_mas", 2, 1), rec("baseline", 2, 0), rec("latent_mas", 1, 0), rec("baseline", 1, 1),
               rec("baseline", 1, 0, "first"), rec("baseline", 1, 0, "again"), rec("text_mas", 1, 0),
               {"method": "baseline", "index": 2, "final_text": "old, no seed"}]
    merged = result_files.merge_records(records, ["baseline", "latent_mas"], [1, 2], default_seed=1)
    keys = [result_files.record_key(r, 1) for r in merged]
    assert keys == [("baseline", 1, 0), ("baseline", 1, 1), ("baseline", 1, 2), ("latent_mas", 1, 0),
                    ("text_mas", 1, 0), ("baseline", 2, 0), ("latent_mas", 2, 1)]
    assert merged[0]["final_text"] == "first"


def write_lines(path: Path, records: list[dict], torn: bool = False) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_text(text + ('{"method": "base' if torn else ""))


def test_one_process_resume_folds_shard_files_into_predictions(tmp_path):
    """A launch of 3 killed mid-run, resumed by one process: every shard (a torn last line dropped) joins the merged
    file in order, the shard files go, and what is done is the union."""
    write_lines(tmp_path / "predictions.jsonl", [rec("baseline", 1, 0)])
    write_lines(result_files.shard_path(tmp_path, 0), [rec("baseline", 1, 3), rec("baseline", 1, 0)])
    write_lines(result_files.shard_path(tmp_path, 2), [rec("baseline", 1, 2)], torn=True)
    files = result_files.ResultFiles(dp.DistContext(), tmp_path, ["baseline"], [1])
    assert files.done == {("baseline", 1, 0), ("baseline", 1, 2), ("baseline", 1, 3)}
    assert files.todo("baseline", 1, 5) == [1, 4] and files.write_path == tmp_path / "predictions.jsonl"
    assert result_files.shard_files(tmp_path) == {}
    on_disk = [json.loads(l) for l in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["index"] for r in on_disk] == [0, 2, 3]


def test_owned_files(tmp_path):
    for r in (0, 1, 2, 3):
        result_files.shard_path(tmp_path, r).write_text("")
    (tmp_path / "predictions.jsonl").write_text("")
    names = lambda ctx: sorted(p.name for p in result_files.owned_files(tmp_path, ctx.rank, ctx.world_size))
    # A world of 2 resuming a world of 4: ranks 2 and 3 are gone, every rank takes their files (merged, deduplicated).
    assert names(dp.DistContext(0, 2, 0)) == ["predictions.jsonl", "predictions.rank0.jsonl",
                                              "predictions.rank2.jsonl", "predictions.rank3.jsonl"]
    assert names(dp.DistContext(1, 2, 1)) == ["predictions.rank1.jsonl", "predictions.rank2.jsonl",
                                              "predictions.rank3.jsonl"]


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir) -> str:
    """The suite's tiny model (tests/tiny_model.py): greedy outputs differ from item to item, so a shuffled merge
    would show."""
    return tiny_model_dir


def flags(model_dir, data_dir, out, n, *extra):
    return ["--model_name", model_dir, "--data_dir", data_dir, "--task", "gsm8k", "--max_samples", n,
            "--temperature", 0, "--output_dir", out, "--quiet", *extra]


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "run.py",
            *map(str, args)]


def run(cmd, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def records(out) -> list[dict]:
    return [json.loads(l) for l in (Path(out) / "predictions.jsonl").read_text().splitlines()]


def results(r: dict) -> tuple:
    """What a run computes for an item (timings aside)."""
    return (r["method"], r["seed"], r["index"], r["final_text"], r["prediction"], r["correct"], r["output_tokens"],
            [(a["input"], a["output"], a["output_tokens"], a["latent_steps"]) for a in r["agents"]], r["kv_bytes"])


def test_two_processes_give_the_one_process_results(varied_model_dir, data_dir, tmp_path):
    """torchrun, 2 CPU ranks (gloo), greedy: item by item the results of one process, in one merged file in the
    same order; the items dealt 8/7; one global bar; no shard file left."""
    common = flags(varied_model_dir, data_dir, tmp_path / "x", 5, "--method", "baseline", "text_mas", "latent_mas",
                   "--latent_steps", 2, "--max_new_tokens", 6, "--generate_bs", 2)
    one, two = tmp_path / "one", tmp_path / "two"
    import run as cli

    assert cli.main([*map(str, common), "--output_dir", str(one)]) == 0  # one process, in this one (no start-up)
    proc = run(torchrun(*common, "--output_dir", two))
    assert [results(r) for r in records(two)] == [results(r) for r in records(one)]
    assert len({r["final_text"] for r in records(one)}) > 5  # outputs vary from item to item
    assert sorted(p.name for p in two.iterdir()) == ["predictions.jsonl", "summary.json"]
    summary, single = (json.loads((d / "summary.json").read_text()) for d in (two, one))
    assert summary["status"] == "finished" and summary["settings"]["world_size"] == 2
    assert summary["items_per_rank"] == [8, 7]
    for name in ("baseline", "text_mas", "latent_mas"):
        for key in ("n", "correct", "accuracy", "total_output_tokens", "peak_kv_bytes_total"):
            assert summary["methods"][name][key] == single["methods"][name][key]
    assert "2 ranks" in proc.stderr and "15/15" in proc.stderr  # the global bar, to its end
    finals = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    assert [f["method"] for f in finals] == ["baseline", "text_mas", "latent_mas"]  # rank 0 alone prints them


def worker_pid(launcher: int, rank: int, deadline: float) -> int:
    """The pid of the launcher's worker process with RANK=rank (from /proc)."""
    while time.time() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
                if parent == launcher and f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                    return int(proc.name)
            except (OSError, ValueError, IndexError):
                continue
        time.sleep(0.1)
    raise AssertionError(f"no worker with RANK={rank} under pid {launcher}")


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the rank to kill")
def test_killed_rank_resumes_without_loss_or_repeat(varied_model_dir, data_dir, tmp_path):
    """SIGKILL rank 1 mid-run (torchrun then stops rank 0), rerun with --resume: every (method, seed, item) once,
    the records finished before the kill kept as they were (not recomputed), and only the rest computed."""
    out = tmp_path / "run"
    args = flags(varied_model_dir, data_dir, out, 6, "--method", "baseline", "latent_mas", "--latent_steps", 1,
                 "--seed", 1, 2, "--max_new_tokens", 40, "--generate_bs", 1)
    launcher = subprocess.Popen(torchrun(*args), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        victim = worker_pid(launcher.pid, 1, deadline)
        shard1 = result_files.shard_path(out, 1)
        while time.time() < deadline and (not shard1.exists() or len(shard1.read_text().splitlines()) < 2):
            time.sleep(0.05)
        os.kill(victim, signal.SIGKILL)
        assert launcher.wait(timeout=120) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    before = [r for p in result_files.shard_files(out).values() for r in result_files.read_records([p])]
    assert 2 <= len(before) < 24, "the kill must land mid-run"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] in ("running", "interrupted")

    run(torchrun(*args, "--resume"))
    merged = records(out)
    keys = [(r["method"], r["seed"], r["index"]) for r in merged]
    assert keys == [(m, s, i) for s in (1, 2) for m in ("baseline", "latent_mas") for i in range(6)]
    by_key = {(r["method"], r["seed"], r["index"]): r for r in merged}
    assert all(by_key[(r["method"], r["seed"], r["index"])] == r for r in before)  # same timings: not redone
    summary = json.loads((out / "summary.json").read_text())
    assert sum(summary["items_per_rank"]) == 24 - len(before)
    assert summary["status"] == "finished" and summary["methods"]["latent_mas"]["n"] == 6
    assert result_files.shard_files(out) == {}
