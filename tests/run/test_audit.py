"""The hash-chained audit log: any one-byte change is found and named by line; saved models are checked."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fedtumor.cli import app
from fedtumor.core.config import RunConfig
from fedtumor.run.audit import AuditLog, model_sha256, verify_run
from fedtumor.run.checkpoint import save_checkpoint
from fedtumor.run.files import AUDIT_FILE


def small_model(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(4, 3, generator=generator), "conv.bias": torch.zeros(4)}


@pytest.fixture
def run_dir(tmp_path):
    log = AuditLog(tmp_path)
    log.append("run-start", config={"strategy": "fedavg", "seed": 0}, num_nodes=3)
    for server_round in range(3):
        log.append(
            "round",
            round=server_round,
            model_sha256=model_sha256(small_model(server_round)),
            train={"asked": ["site-1", "site-2"], "rejected": {"site-2": "array 'w' has NaN or Inf values"}},
        )
    save_checkpoint(tmp_path / "final_model.pt", small_model(2), RunConfig(), server_round=2)
    return tmp_path


def test_an_untouched_log_and_model_verify(run_dir):
    report = verify_run(run_dir, model_files=("final_model.pt",))
    assert report.intact, report.problem
    assert (report.entries, report.rounds, report.models_checked) == (4, 3, ("final_model.pt",))


def test_the_model_hash_is_the_same_from_numpy_and_from_torch():
    model = small_model(0)
    assert model_sha256(model) == model_sha256({k: v.numpy() for k, v in model.items()})
    changed = {**model, "conv.bias": torch.full((4,), 1e-7)}
    assert model_sha256(changed) != model_sha256(model)


def test_every_one_byte_change_is_found_at_its_line(run_dir):
    path = run_dir / AUDIT_FILE
    original = path.read_bytes()
    line_starts = [0] + [i + 1 for i, byte in enumerate(original) if byte == ord("\n")][:-1]
    checked = 0
    for offset in range(len(original)):
        line = max(n for n, start in enumerate(line_starts, start=1) if start <= offset)
        for replacement in {original[offset] ^ 0x01, ord(" ")} - {original[offset]}:
            changed = bytearray(original)
            changed[offset] = replacement
            path.write_bytes(bytes(changed))
            report = verify_run(run_dir)
            assert report.problem is not None, (offset, replacement)
            assert report.problem.line == line, (offset, report.problem)
            checked += 1
    path.write_bytes(original)
    assert checked >= len(original) and verify_run(run_dir).intact


def test_a_removed_or_appended_entry_is_found(run_dir):
    path = run_dir / AUDIT_FILE
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:1] + lines[2:]))
    assert verify_run(run_dir).problem.line == 2
    path.write_text("".join(lines))
    (run_dir / "summary.json").write_text(json.dumps({"audit_head_sha256": json.loads(lines[2])["sha256"]}))
    report = verify_run(run_dir)
    assert report.problem.line == 4 and "after the run finished" in report.problem.reason
    path.write_text("".join(lines[:-1]))  # the finished run's last entry cut off
    assert verify_run(run_dir).intact  # the head is now the last entry again
    path.write_text("".join(lines[:2]))
    assert "not in audit.jsonl" in verify_run(run_dir).problem.reason


def test_a_replaced_model_file_is_named(run_dir):
    save_checkpoint(run_dir / "final_model.pt", small_model(1), RunConfig(), server_round=2)
    problem = verify_run(run_dir, model_files=("final_model.pt",)).problem
    assert problem.line == 4 and "final_model.pt (round 2) does not match" in problem.reason


def test_an_unreadable_model_file_is_named(run_dir):
    path = run_dir / "final_model.pt"
    path.write_bytes(path.read_bytes()[:100])
    problem = verify_run(run_dir, model_files=("final_model.pt",)).problem
    assert problem.line == 0 and f"{path} cannot be read" in problem.reason


def test_cli_exit_codes(run_dir, tmp_path_factory):
    runner = CliRunner()
    intact = runner.invoke(app, ["audit", "verify", str(run_dir)])
    assert intact.exit_code == 0 and "intact: 4 entries, 3 rounds" in intact.output, intact.output
    path = run_dir / AUDIT_FILE
    data = bytearray(path.read_bytes())
    second_line = data.index(b"\n") + 1
    data[second_line + 30] ^= 0x02
    path.write_bytes(bytes(data))
    altered = runner.invoke(app, ["audit", "verify", str(run_dir)])
    assert altered.exit_code == 1 and "audit.jsonl line 2" in altered.output, altered.output
    missing = runner.invoke(app, ["audit", "verify", str(tmp_path_factory.mktemp("empty") / "nope")])
    assert missing.exit_code == 2 and "no such run folder" in missing.output


def test_reopening_the_log_continues_the_chain(run_dir):
    log = AuditLog(run_dir)
    assert log.count == 4
    log.append("resume", from_round=2)
    assert verify_run(run_dir).intact
    assert np.array_equal(json.loads((run_dir / AUDIT_FILE).read_text().splitlines()[-1])["index"], 4)
