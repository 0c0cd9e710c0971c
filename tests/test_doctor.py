"""``ledgerctl doctor``: what this machine and filesystem give the configured ledger."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import pytest

from ledger import _netfs, _policy_load
from ledger.cli import main
from ledger.protections import PROTECTIONS

from conftest import default_audit_file, run_cli

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX backend")


@pytest.fixture(autouse=True)
def no_machine_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep any machine policy of the host out of in-process runs."""
    monkeypatch.setattr(_policy_load, "MACHINE_POLICY_PATH", str(tmp_path / "no-machine.toml"))


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    """Run ``ledgerctl doctor --json ARGS`` in-process; check exit 0 and return the report."""
    assert main(["doctor", "--json", *args]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    info: dict[str, Any] = json.loads(out)
    return info


def tree(folder: Path) -> list[str]:
    """Every path below ``folder``, to prove that nothing was created."""
    return sorted(str(path) for path in folder.rglob("*"))


def test_private_local_folder_passes_strict(
    ledger_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A private folder on a local disk gets every protection: strict would pass."""
    info = doctor(capsys, "--dir", str(ledger_dir))
    assert (info["folder"], info["exists"], info["checked_folder"]) == (
        str(ledger_dir), True, str(ledger_dir))
    assert info["filesystem"]["remote"] is False
    assert {name: entry["status"] for name, entry in info["protections"].items()} == {
        name: "ok" for name in PROTECTIONS}
    assert all(check["ok"] for check in info["checks"])
    assert (info["strict_would_pass"], info["secure_would_pass"], info["missing"]) == (
        True, True, [])
    assert info["advice"] == ["Nothing to change: strict mode would pass here."]


def test_missing_folder_is_not_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """For a folder that does not exist, its nearest existing parent is checked; nothing is made."""
    parent = tmp_path / "private"
    parent.mkdir(mode=0o700)
    before = tree(tmp_path)
    info = doctor(capsys, "--dir", str(parent / "a" / "b"))
    assert (info["exists"], info["checked_folder"]) == (False, str(parent))
    assert info["strict_would_pass"] is True
    assert tree(tmp_path) == before
    assert not default_audit_file().exists()


def test_missing_folder_in_a_sticky_shared_folder_is_fine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger folder to be made inside a sticky shared folder (like /tmp) passes the checks."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    info = doctor(capsys, "--dir", str(shared / "mine"))
    assert info["secure_would_pass"] is True
    assert "sticky" in info["checks"][0]["detail"]
    assert not (shared / "mine").exists()


def test_folder_writable_by_others_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder everyone may write fails the permission check; doctor still exits 0 and says how."""
    folder = tmp_path / "open"
    folder.mkdir()
    os.chmod(folder, 0o777)
    info = doctor(capsys, "--dir", str(folder))
    assert (info["strict_would_pass"], info["secure_would_pass"]) == (False, False)
    assert info["protections"]["permission_check"]["status"] == "failed"
    assert info["checks"][0]["exit_code"] == 77
    assert any(f"chmod go-w {folder}" in line for line in info["advice"])


def test_linked_folder_is_refused_and_its_target_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger folder that is a link fails the folder check; the link's target is not touched."""
    target = tmp_path / "victim"
    target.mkdir(mode=0o700)
    (target / "escalation-history.json").write_text("[]\n", encoding="utf-8")
    link = tmp_path / "ledgers"
    link.symlink_to(target)
    before = tree(target)
    info = doctor(capsys, "--dir", str(link))
    assert info["protections"]["folder_check"]["status"] == "failed"
    assert info["checks"][0]["reason"] == "symlink"
    assert tree(target) == before


@pytest.mark.parametrize("kind", ["dangling link", "file", "below a file", "fifo"])
def test_something_other_than_a_folder_at_the_name_fails_like_the_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    """A dangling link, a file or a FIFO where the ledger folder should be (or above it)
    is what a write is refused for (77): doctor must not take it for an absent folder
    that can be created, and says neither strict nor secure would pass."""
    place = tmp_path / "private"
    place.mkdir(mode=0o700)
    odd = place / "odd"
    if kind == "dangling link":
        odd.symlink_to(tmp_path / "nowhere")
    elif kind == "fifo":
        os.mkfifo(odd)
    else:
        odd.write_text("", encoding="utf-8")
    folder = odd / "sub" if kind == "below a file" else odd
    before = tree(place)

    info = doctor(capsys, "--dir", str(folder))
    write = run_cli("append", str(folder / "book.json"), "{}")

    assert write.returncode == 77, write.stderr
    assert (info["strict_would_pass"], info["secure_would_pass"]) == (False, False)
    assert info["checks"][0]["ok"] is False
    assert info["checks"][0]["exit_code"] == 77
    assert info["checks"][0]["reason"] in ("symlink", "not_a_folder")
    assert tree(place) == before


def test_a_missing_folder_below_your_own_link_passes_like_the_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write resolves the user's own links above the ledger folder (a dotfiles link,
    say) and creates the missing folder in the target; doctor judges it the same way,
    also for a link of yours that leads to a folder not made yet."""
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "ahead").symlink_to(tmp_path / "later")
    for folder in (tmp_path / "link" / "newsub", tmp_path / "ahead" / "sub"):
        info = doctor(capsys, "--dir", str(folder))
        assert (info["secure_would_pass"], info["exists"]) == (True, False), info["checks"]
        write = run_cli("append", str(folder / "book.json"), "{}")
        assert write.returncode == 0, write.stderr
    assert json.loads((real / "newsub" / "book.json").read_text()) == [{}]
    assert json.loads((tmp_path / "later" / "sub" / "book.json").read_text()) == [{}]


def test_corrupt_ledger_is_reported_and_left_alone(
    ledger_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ledger that does not parse is reported (65) and stays byte-identical."""
    ledger = ledger_dir / "escalation-history.json"
    ledger.write_bytes(b'[{"signal_hash": "x", ')
    before = ledger.read_bytes()
    info = doctor(capsys, "--dir", str(ledger_dir))
    check = next(check for check in info["checks"] if check["name"] == "ledger file")
    assert (check["ok"], check["exit_code"]) == (False, 65)
    assert info["secure_would_pass"] is False
    assert ledger.read_bytes() == before


def test_valid_ledger_is_counted(ledger_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An existing valid escalation ledger is read and its entries counted."""
    entry = {"signal_hash": "a", "user_response": "declined", "timestamp": 1}
    (ledger_dir / "escalation-history.json").write_text(json.dumps([entry, entry]),
                                                        encoding="utf-8")
    info = doctor(capsys, "--dir", str(ledger_dir))
    check = next(check for check in info["checks"] if check["name"] == "ledger file")
    assert check == {**check, "ok": True, "detail": "valid, 2 entries"}


def _nfs(fd: int) -> tuple[str, Optional[bool]]:
    return "nfs4", True


def test_network_filesystem_fails_strict_only(
    ledger_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On NFS, strict would refuse (local_fs missing) while secure would write."""
    monkeypatch.setattr(_netfs, "filesystem_of", _nfs)
    info = doctor(capsys, "--dir", str(ledger_dir))
    assert info["filesystem"] == {"type": "nfs4", "remote": True}
    assert info["missing"] == ["local_fs"]
    assert info["protections"]["local_fs"]["status"] == "missing"
    assert (info["strict_would_pass"], info["secure_would_pass"]) == (False, True)
    assert any("local filesystem" in line for line in info["advice"])


def test_platform_without_a_mechanism_fails_strict(
    ledger_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A protection the backend cannot offer is listed as missing, and strict would refuse."""
    from ledger._posix import PosixBackend

    offered = PosixBackend().capabilities()
    monkeypatch.setattr(PosixBackend, "capabilities", lambda self: {**offered, "lock": None})
    info = doctor(capsys, "--dir", str(ledger_dir))
    assert info["missing"] == ["lock"]
    assert info["strict_would_pass"] is False
    assert any("cannot give lock" in line for line in info["advice"])


def test_configured_folder_is_the_default(
    tmp_path: Path, ledger_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --dir, doctor examines the escalation folder from the policy or the variable."""
    user = Path(_policy_load.user_policy_path())
    user.parent.mkdir(parents=True, mode=0o700)
    user.write_text(f'escalation_dir = "{ledger_dir}"\n', encoding="utf-8")
    assert doctor(capsys)["folder"] == str(ledger_dir)
    monkeypatch.setenv("PF_ESCALATION_LEDGER_DIR", str(tmp_path / "elsewhere"))
    assert doctor(capsys)["folder"] == str(tmp_path / "elsewhere")


def test_table_for_people_in_a_real_process(ledger_dir: Path) -> None:
    """The table lists every protection and the verdict; exit 0, nothing on stderr."""
    done = run_cli("doctor", "--dir", str(ledger_dir))
    assert (done.returncode, done.stderr) == (0, "")
    lines = done.stdout.splitlines()
    assert lines[0] == f"Ledger folder: {ledger_dir} (exists)"
    rows = {line.split()[0] for line in lines if line.startswith("  ") and len(line.split()) >= 3}
    assert set(PROTECTIONS) <= rows
    assert "Strict mode would pass; secure mode would write." in lines


def test_legacy_policy_is_pointed_out(
    ledger_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Under a legacy policy doctor still examines the folder and advises against legacy."""
    policy = tmp_path / "legacy.toml"
    policy.write_text('mode = "legacy"\n', encoding="utf-8")
    info = doctor(capsys, "--policy", str(policy), "--dir", str(ledger_dir))
    assert info["mode"] == "legacy" and info["strict_would_pass"] is True
    assert any("legacy" in line for line in info["advice"])


def test_broken_policy_is_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """doctor needs the policy to find the ledger: an invalid one is 78 like everywhere."""
    policy = tmp_path / "bad.toml"
    policy.write_text("mode = 1\n", encoding="utf-8")
    assert main(["doctor", "--policy", str(policy)]) == 78
    assert str(policy) in capsys.readouterr().err


def test_network_parent_of_a_missing_folder_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """For a folder still to be made in a sticky shared folder on NFS, the type is reported."""
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    monkeypatch.setattr(_netfs, "filesystem_of", _nfs)
    info = doctor(capsys, "--dir", str(shared / "mine"))
    assert info["filesystem"] == {"type": "nfs4", "remote": True}
    assert (info["missing"], info["strict_would_pass"]) == (["local_fs"], False)
