"""The Hub both ways, against a stand-in Hub on 127.0.0.1 driven by the real huggingface_hub
client: push a merge in one commit and download it back byte for byte, pull checkpoints by Hub id
at a revision, clear one-line errors, and the token never in any output or file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import assert_refused, cli, state
from hubserver import FakeHub
from huggingface_hub import ModelCard, snapshot_download

from mergekit_sg import interpolate
from mergekit_sg.errors import SgMergeError
from mergekit_sg.io import Evidence, add_evidence, check_card, plan_upload, push_folder, resolve

TOKEN = "hf_SECRETtoken123"


@pytest.fixture()
def hub():
    with FakeHub(TOKEN) as server:
        yield server


@pytest.fixture()
def online(hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """In-process huggingface_hub pointed at the stand-in Hub, with the token in HF_TOKEN only."""
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(c, "ENDPOINT", hub.url)
    monkeypatch.setattr(
        c, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(c, "HF_TOKEN_PATH", str(tmp_path / "hf_home" / "token"))
    monkeypatch.setattr(c, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf_home" / "stored_tokens"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    return hub


def sg(hub: FakeHub, tmp_path: Path, *args: str, token: str | None = TOKEN):
    """`sgmerge ARGS` in a fresh process that finds the Hub through HF_ENDPOINT, as users do."""
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "COLUMNS": "200",
    }
    env.pop("HF_TOKEN", None)
    if token is not None:
        env["HF_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "mergekit_sg", *args], capture_output=True, text=True, env=env
    )


def assert_no_token(
    root: Path, *runs: subprocess.CompletedProcess[str], wrote: bool = True
) -> None:
    """The token is in no stdout/stderr and in no file under `root` (outputs, caches, cards)."""
    for r in runs:
        assert TOKEN not in r.stdout and TOKEN not in r.stderr
    files = [p for p in root.rglob("*") if p.is_file()]
    assert bool(files) == wrote
    for p in files:
        assert TOKEN.encode() not in p.read_bytes(), p


def test_merge_push_and_download_back_bytes_equal(llama_pair, hub, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    r = sg(
        hub,
        tmp_path,
        "interpolate",
        str(llama_pair["pre_f32"]),
        str(llama_pair["ft_f32"]),
        "--alpha",
        "0.4",
        "-o",
        str(out),
        "--push-to-hub",
        "org/merged",
        "--private",
    )
    assert r.returncode == 0, r.stderr
    assert hub.commits_posted("org/merged") == 1  # the whole folder in one commit
    repo = hub.repos["org/merged"]
    assert repo.private
    commit = repo.refs["main"]
    assert f"{hub.url}/org/merged/commit/{commit}" in r.stdout
    assert all(h == f"Bearer {TOKEN}" for h in hub.auth_headers_seen)  # HF_TOKEN was used

    import huggingface_hub.constants as c

    c_offline = c.HF_HUB_OFFLINE
    c.HF_HUB_OFFLINE = False
    try:
        got = Path(
            snapshot_download(
                "org/merged", endpoint=hub.url, token=TOKEN, cache_dir=tmp_path / "dl"
            )
        )
    finally:
        c.HF_HUB_OFFLINE = c_offline
    local = {f.path_in_repo: f.local.read_bytes() for f in plan_upload(out)}
    assert {"model.safetensors", "config.json", "README.md"} <= set(local)
    for name, data in local.items():
        assert (got / name).read_bytes() == data, name
    meta = check_card(got / "README.md")  # parses with ModelCard, metadata checked
    assert meta["library_name"] == "transformers" and "merge" in meta["tags"]
    assert_no_token(tmp_path, r)


def test_pull_by_hub_id_at_a_revision(llama_pair, hub, tmp_path: Path, monkeypatch) -> None:
    """`org/ft@v2` reads the tagged commit, not main; only weights and side files are fetched."""
    hub.add_repo("org/pre", llama_pair["pre_f32"])
    first = hub.add_repo("org/ft", llama_pair["ft_f32"])
    hub.tag("org/ft", "v2", first)
    hub.commit("org/ft", {"notes.bin.txt": b"not a side file", "extra.pt": b"junk"})
    hub.commit(
        "org/ft", {"model.safetensors": (llama_pair["pre_f32"] / "model.safetensors").read_bytes()}
    )
    out = tmp_path / "o"
    r = sg(hub, tmp_path, "interpolate", "org/pre", "org/ft@v2", "--alpha", "0.5", "-o", str(out))
    assert r.returncode == 0, r.stderr
    local = interpolate(llama_pair["pre_f32"], llama_pair["ft_f32"], tmp_path / "ref", alpha=0.5)
    got, want = state(out), state(local.out)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == ["org/pre", "org/ft"]
    assert first in card.text  # the commit the revision resolved to is recorded
    fetched = {c.path.rsplit("/", 1)[-1] for c in hub.calls if "/resolve/" in c.path}
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert not fetched & {"extra.pt", "notes.bin.txt"}
    assert_no_token(tmp_path, r)
    # Offline afterwards, the same reference is found in the cache at the same commit.
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    monkeypatch.setattr(c, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("org/ft@v2").commit == first


def test_missing_repo_is_one_clear_line(llama_pair, hub, tmp_path: Path) -> None:
    hub.add_repo("org/ft", llama_pair["ft_f32"])
    out = tmp_path / "o"
    r = sg(hub, tmp_path, "interpolate", "org/nope", "org/ft", "-o", str(out))
    assert_refused(r, out, "org/nope", "no such model repo")
    assert_no_token(tmp_path, r, wrote=False)


def test_missing_file_revision_no_weights_and_gated(llama_pair, online, tmp_path, capsys) -> None:
    hub = online
    hub.add_repo("org/ft", llama_pair["ft_f32"])
    hub.add_repo("org/docs", {"README.md": b"# no weights here\n"})
    hub.add_repo("org/gated", llama_pair["ft_f32"], gated=True)
    out = tmp_path / "o"
    cases = [
        ("hf://org/ft/missing.safetensors", ["no file 'missing.safetensors'", "model.safetensors"]),
        ("org/ft@v9", ["revision 'v9' not found in org/ft"]),
        ("org/docs", ["no weight files in org/docs", "README.md"]),
        ("org/gated", ["gated", "HF_TOKEN"]),
    ]
    for ref, words in cases:
        r = cli(capsys, "interpolate", ref, "org/ft", "-o", str(out))
        assert_refused(r, out, *words)
        assert TOKEN not in r.stdout + r.stderr
    assert_no_token(tmp_path, wrote=True)


def test_file_reference_at_a_revision(llama_pair, online, tmp_path: Path) -> None:
    """`hf://org/name@rev/file` fetches that one file of that commit."""
    sha = online.add_repo("org/ft", llama_pair["ft_f32"])
    online.tag("org/ft", "v1", sha)
    online.commit("org/ft", {"model.safetensors": b"moved on"})
    pre = llama_pair["pre_f32"] / "model.safetensors"
    res = interpolate(pre, "hf://org/ft@v1/model.safetensors", tmp_path / "o", alpha=1)
    got, want = state(res.out), state(llama_pair["ft_f32"])
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    files = {c.path.rsplit("/", 1)[-1] for c in online.calls if "/resolve/" in c.path}
    assert files == {"model.safetensors"}


def test_push_cli_dry_run_revision_and_message(llama_pair, online, tmp_path, capsys, monkeypatch):
    hub = online
    out = interpolate(llama_pair["pre_f32"], llama_pair["ft_f32"], tmp_path / "m", alpha=0.5).out
    monkeypatch.delenv("HF_TOKEN")  # a dry run needs no token and sends nothing
    dry = cli(capsys, "push", str(out), "org/m", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    size = (out / "model.safetensors").stat().st_size
    assert "model.safetensors" in dry.stdout and "README.md" in dry.stdout
    assert f"{size / 1000:.2f} KB" in dry.stdout and "nothing sent" in dry.stdout
    assert hub.calls == []
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    r = cli(capsys, "push", str(out), "org/m", "--revision", "dev", "--commit-message", "hi")
    assert r.returncode == 0, r.stderr
    repo = hub.repos["org/m"]
    assert not repo.private and set(repo.refs) == {"main", "dev"}
    assert "model.safetensors" in repo.commits[repo.refs["dev"]]
    assert "model.safetensors" not in repo.commits[repo.refs["main"]]
    assert hub.commits_posted("org/m") == 1
    assert f"commit: {hub.url}/org/m/commit/{repo.refs['dev']}" in r.stdout
    assert_no_token(tmp_path, dry, r)


def test_auth_failures_are_clear_and_never_show_the_token(
    llama_pair, online, tmp_path, capsys, monkeypatch
) -> None:
    out = interpolate(llama_pair["pre_f32"], llama_pair["ft_f32"], tmp_path / "m", alpha=0.5).out
    wrong = "hf_WRONGtoken456"
    monkeypatch.setenv("HF_TOKEN", wrong)
    r = cli(capsys, "push", str(out), "org/m")
    assert_refused(r, tmp_path / "absent", "refused the credentials (HTTP 401)", "HF_TOKEN")
    assert wrong not in r.stderr + r.stdout and "org/m" not in online.repos
    # Without any token, a --push-to-hub merge stops before merging anything.
    monkeypatch.delenv("HF_TOKEN")
    dest = tmp_path / "never"
    r2 = cli(
        capsys, "interpolate", str(llama_pair["pre_f32"]), str(llama_pair["ft_f32"]),
        "-o", str(dest), "--push-to-hub", "org/m",
    )  # fmt: skip
    assert_refused(r2, dest, "not logged in", "HF_TOKEN")
    assert_no_token(tmp_path, r, r2)


def test_no_push_when_the_merge_fails(online, tmp_path: Path, capsys) -> None:
    from safetensors.torch import save_file

    for name, shape in (("a", (4, 4)), ("b", (4, 5))):
        (tmp_path / name).mkdir()
        save_file({"w": torch.ones(shape)}, tmp_path / name / "model.safetensors")
    dest = tmp_path / "o"
    r = cli(
        capsys, "interpolate", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(dest),
        "--push-to-hub", "org/m",
    )  # fmt: skip
    assert_refused(r, dest, "shape mismatch")
    assert online.calls == [] and "org/m" not in online.repos


def test_push_to_hub_refuses_several_alphas_before_merging(llama_pair, tmp_path) -> None:
    from mergekit_sg.commands import interpolate_and_push
    from mergekit_sg.merge import InterpolateOptions

    opts = InterpolateOptions(alpha=[0.2, 0.4], push_to_hub="org/m")
    with pytest.raises(SgMergeError, match="'org/bad--name' is not a Hub repo id"):
        interpolate_and_push(
            llama_pair["pre_f32"],
            llama_pair["ft_f32"],
            tmp_path / "o",
            InterpolateOptions(push_to_hub="org/bad--name"),
        )
    with pytest.raises(SgMergeError, match="pushes one model"):
        interpolate_and_push(llama_pair["pre_f32"], llama_pair["ft_f32"], tmp_path / "o", opts)
    with pytest.raises(SgMergeError, match="--private needs --push-to-hub"):
        interpolate_and_push(
            llama_pair["pre_f32"],
            llama_pair["ft_f32"],
            tmp_path / "o",
            InterpolateOptions(private=True),
        )
    assert not (tmp_path / "o").exists()


def _png(path: Path) -> Path:
    """A real PNG plot, as a scan writes one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 0.5, 1], [0.61, 0.70, 0.55])
    fig.savefig(path)
    plt.close(fig)
    return path


def test_card_with_evidence_parses_validates_and_survives_the_hub(
    llama_pair, online, tmp_path: Path
) -> None:
    """Made-up scan rows and a plot: the card shows the table and links the plot beside it."""
    rows = [
        {"alpha": 0.0, "imagenet": 0.683, "shift_avg": 0.589, "chosen": False},
        {"alpha": 0.5, "imagenet": 0.811, "shift_avg": 0.627, "chosen": True},
        {"alpha": 1.0, "imagenet": 0.817, "shift_avg": 0.561, "chosen": False},
    ]
    plot = _png(tmp_path / "scan.png")
    online.calls.clear()
    ev = Evidence("Alpha scan", rows, plot, note="alpha=0.5 keeps 99% of ImageNet accuracy.")
    from mergekit_sg.io import CardExtras

    res = interpolate(
        llama_pair["pre_f32"], llama_pair["ft_f32"], tmp_path / "m", alpha=0.5,
        extras=CardExtras(evidence=(ev,)),
    )  # fmt: skip
    card_path = res.out / "README.md"
    text = card_path.read_text()
    assert "## Alpha scan" in text and "![Alpha scan](alpha_scan.png)" in text
    assert (
        "| alpha | imagenet | shift_avg | chosen |" in text
        and "| 0.5 | 0.811 | 0.627 | yes |" in text
    )
    assert text.index("## Alpha scan") < text.index("## Sources")
    assert (res.out / "alpha_scan.png").read_bytes() == plot.read_bytes()
    meta = check_card(card_path)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert "merge" in meta["tags"]
    # evidence added afterwards (a scan run after the merge) goes before the sources too
    lmc = Evidence("Linear mode connectivity", [{"alpha": 0.5, "barrier": 0.012}])
    add_evidence(res.out, [lmc])
    text = card_path.read_text()
    assert text.index("## Linear mode connectivity") < text.index("## Sources")
    check_card(card_path)
    pushed = push_folder(res.out, "org/evidence", endpoint=online.url)
    assert pushed.commit_url and "alpha_scan.png" in {f.path_in_repo for f in pushed.files}
    got = Path(snapshot_download("org/evidence", endpoint=online.url, cache_dir=tmp_path / "dl"))
    assert (got / "alpha_scan.png").read_bytes() == plot.read_bytes()
    assert (got / "README.md").read_text() == card_path.read_text()


def test_bad_cards_and_plots_are_refused(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("---\nbase_model: [not a repo id!]\n---\n# x\n")
    with pytest.raises(SgMergeError, match="not a Hub repo id"):
        check_card(tmp_path / "README.md")
    with pytest.raises(SgMergeError, match="model card metadata"):
        push_folder(tmp_path, "org/x", dry_run=True)
    (tmp_path / "fake.png").write_text("not a png")
    with pytest.raises(SgMergeError, match="not a PNG"):
        add_evidence(tmp_path, [Evidence("Scan", [{"alpha": 0.5}], tmp_path / "fake.png")])


def test_recipe_with_push_to_hub(llama_pair, online, tmp_path: Path, capsys) -> None:
    """A recipe's options may push too; the pushed folder carries the recipe that made it."""
    recipe = tmp_path / "push.yaml"
    recipe.write_text(
        "command: interpolate\n"
        f"inputs: {{pretrained: {llama_pair['pre_f32']}, finetuned: {llama_pair['ft_f32']}}}\n"
        f"out: {tmp_path / 'out'}\n"
        "options: {alpha: [0.5], push_to_hub: org/from-recipe, private: true}\n"
    )
    r = cli(capsys, "run", str(recipe))
    assert r.returncode == 0, r.stderr
    repo = online.repos["org/from-recipe"]
    files = repo.commits[repo.refs["main"]]
    assert repo.private and online.commits_posted("org/from-recipe") == 1
    assert files["sgmerge_recipe.yaml"] == (tmp_path / "out" / "sgmerge_recipe.yaml").read_bytes()
    assert b"push_to_hub: org/from-recipe" in files["sgmerge_recipe.yaml"]
    assert f"{online.url}/org/from-recipe/commit/{repo.refs['main']}" in r.stdout
    assert_no_token(tmp_path, r)


def test_push_recipe_dry_run_then_push(llama_pair, online, tmp_path, capsys, monkeypatch) -> None:
    """`command: push` takes the CLI's FOLDER and REPO_ID as inputs and its flags as options: a
    dry run lists every file with its size and sends nothing, then one commit uploads them all
    byte for byte to the branch; the token is in no output and no file."""
    out = interpolate(llama_pair["pre_f32"], llama_pair["ft_f32"], tmp_path / "m", alpha=0.5).out
    monkeypatch.setenv("PUSH_FOLDER", str(out))
    recipe = tmp_path / "push.yaml"
    recipe.write_text(
        "command: push\n"
        "inputs: {folder: '${PUSH_FOLDER}', repo_id: org/pushed}\n"
        "options: {revision: dev, commit_message: from a recipe, private: true, dry_run: true}\n"
    )
    monkeypatch.delenv("HF_TOKEN")  # a dry run needs no token
    plan = cli(capsys, "run", str(recipe), "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert "would run: push" in plan.stdout and "Hub repo (written when run)" in plan.stdout
    dry = cli(capsys, "run", str(recipe))
    assert dry.returncode == 0, dry.stderr
    files = plan_upload(out)
    total = sum(f.size for f in files)
    assert f"would push {len(files)} files ({total:,} bytes) to org/pushed (dev)" in dry.stdout
    for f in files:
        assert f"{f.path_in_repo} ({f.size:,} bytes)" in dry.stdout
    assert "dry run: nothing sent" in dry.stdout and online.calls == []
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    recipe.write_text(recipe.read_text().replace("dry_run: true", "dry_run: false"))
    r = cli(capsys, "run", str(recipe))
    assert r.returncode == 0, r.stderr
    repo = online.repos["org/pushed"]
    assert repo.private and online.commits_posted("org/pushed") == 1
    pushed, local = repo.commits[repo.refs["dev"]], {f.path_in_repo: f.local for f in files}
    assert {name: pushed.get(name) for name in local} == {
        name: path.read_bytes() for name, path in local.items()
    }
    assert f"commit: {online.url}/org/pushed/commit/{repo.refs['dev']}" in r.stdout
    refused = cli(capsys, "run", str(recipe), "--force")
    assert refused.returncode == 2 and "push has no force option" in refused.stderr
    assert_no_token(tmp_path, plan, dry, r, refused)


def test_repush_sends_only_what_changed(llama_pair, online, tmp_path, capsys) -> None:
    """A second push of the same folder sends nothing and makes no commit; after one file
    changes, only that file goes up, and the line says how many were already there. The
    weights are compared by their LFS sha256, the small files by their git blob id."""
    from hubserver import git_blob_sha1

    from mergekit_sg.io.hub import RemoteFile, UploadFile, git_blob_id, same_as_remote

    hub = online
    out = interpolate(llama_pair["pre_f32"], llama_pair["ft_f32"], tmp_path / "m", alpha=0.5).out
    n = len(plan_upload(out))
    first = cli(capsys, "push", str(out), "org/m")
    assert first.returncode == 0, first.stderr
    assert f"pushed {n} files" in first.stdout and "unchanged" not in first.stdout
    head = hub.repos["org/m"].refs["main"]

    again = cli(capsys, "push", str(out), "org/m")
    assert again.returncode == 0, again.stderr
    assert f"nothing to push: {n} files already up to date on org/m (main)" in again.stdout
    assert f"commit: {hub.url}/org/m/commit/{head}" in again.stdout  # the branch's head
    assert hub.commits_posted("org/m") == 1 and hub.repos["org/m"].refs["main"] == head
    res = push_folder(out, "org/m", endpoint=hub.url)  # the Python API says the same
    assert res.sent == [] and sorted(res.unchanged) == sorted(f.path_in_repo for f in res.files)

    card = out / "README.md"
    card.write_text(card.read_text() + "\nOne more line.\n")
    third = cli(capsys, "push", str(out), "org/m")
    assert third.returncode == 0, third.stderr
    assert "pushed 1 file (" in third.stdout and f"{n - 1} unchanged" in third.stdout
    assert hub.committed[-1] == ["README.md"]  # only the changed file was sent
    assert hub.repos["org/m"].commits[hub.repos["org/m"].refs["main"]]["README.md"] == (
        card.read_bytes()
    )

    # the comparison itself: git blob id as git computes it; LFS by sha256; size first
    weights = out / "model.safetensors"
    data = weights.read_bytes()
    assert git_blob_id(weights) == git_blob_sha1(data)
    f = UploadFile("model.safetensors", weights, len(data))
    sha = __import__("hashlib").sha256(data).hexdigest()
    assert same_as_remote(f, sha, RemoteFile("x" * 40, len(data), sha))
    assert not same_as_remote(f, sha, RemoteFile("x" * 40, len(data), "0" * 64))
    assert not same_as_remote(f, sha, RemoteFile(git_blob_sha1(data), len(data) + 1))
    assert same_as_remote(f, sha, RemoteFile(git_blob_sha1(data), len(data)))
    assert not same_as_remote(f, sha, None)
