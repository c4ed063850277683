"""A small stand-in for the Hugging Face Hub on 127.0.0.1, for driving the real huggingface_hub
client in tests: repo creation, preupload + NDJSON commits (every file uploaded as a "regular"
base64 blob, so no LFS or Xet storage is needed), repo info, tree listing, file resolve
(HEAD and GET with the headers the client checks), branches, tags, private and gated repos."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

GITATTRIBUTES = {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"}


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob, which the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """One model repo: branches and tags name commits; a commit is a full file snapshot."""

    private: bool = False
    gated: bool = False
    refs: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)


@dataclass
class Call:
    method: str
    path: str
    authorized: bool


class FakeHub:
    """The server and its state; `with FakeHub(token) as hub:` serves on `hub.url`."""

    def __init__(self, token: str, user: str = "tester") -> None:
        self.token = token
        self.user = user
        self.repos: dict[str, Repo] = {}
        self.calls: list[Call] = []
        self.auth_headers_seen: list[str] = []
        self.committed: list[list[str]] = []  # the paths each posted commit carried
        self._lock = threading.Lock()
        self._n = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # state helpers used by tests and handlers
    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        """Record a commit on `branch` adding `files` to its parent snapshot; returns its sha."""
        with self._lock:
            repo = self.repos[repo_id]
            parent = repo.commits.get(repo.refs.get(branch, ""), {})
            self._n += 1
            sha = hashlib.sha1(f"{repo_id}:{branch}:{self._n}".encode()).hexdigest()
            repo.commits[sha] = {**parent, **files}
            repo.refs[branch] = sha
            return sha

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes] | Path | None = None,
        private: bool = False,
        gated: bool = False,
    ) -> str | None:
        """Create a repo, optionally with a first commit of `files` (or a directory's files)."""
        self.repos[repo_id] = Repo(private=private, gated=gated)
        if files is None:
            return None
        if isinstance(files, Path):
            files = {
                str(p.relative_to(files)): p.read_bytes()
                for p in sorted(files.rglob("*"))
                if p.is_file()
            }
        return self.commit(repo_id, files)

    def tag(self, repo_id: str, tag: str, commit: str) -> None:
        self.repos[repo_id].refs[tag] = commit

    def commits_posted(self, repo_id: str) -> int:
        return sum(
            1
            for c in self.calls
            if c.method == "POST" and c.path.startswith(f"/api/models/{repo_id}/commit/")
        )


class _Reply(Exception):
    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None):
        self.status, self.body, self.headers = status, body, headers or {}


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file git stores for an LFS file (its blob id is the tree's oid)."""
    sha = hashlib.sha256(data).hexdigest()
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
    )


def _tree_file(name: str, data: bytes) -> dict[str, Any]:
    """A tree entry as the Hub lists it: `*.safetensors` (the .gitattributes rule) as an LFS
    file, with the pointer's blob id and the content's sha256; anything else as a git blob."""
    if not name.endswith(".safetensors"):
        return {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": name}
    pointer = lfs_pointer(data)
    return {
        "type": "file",
        "oid": git_blob_sha1(pointer),
        "size": len(data),
        "path": name,
        "lfs": {
            "oid": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "pointerSize": len(pointer),
        },
    }


def _not_found(code: str, message: str, headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(
        404,
        {"error": message},
        {"X-Error-Code": code, "X-Error-Message": message, **(headers or {})},
    )


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        # plumbing
        def _auth(self) -> bool | None:
            """True: the valid token; False: a wrong one (401); None: anonymous."""
            value = self.headers.get("authorization")
            if value is None:
                return None
            hub.auth_headers_seen.append(value)
            return value == f"Bearer {hub.token}"

        def _body(self) -> bytes:
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""

        def _send(
            self, status: int, body: Any = None, headers: dict[str, str] | None = None
        ) -> None:
            data = (
                b""
                if body is None
                else body
                if isinstance(body, bytes)
                else json.dumps(body).encode()
            )
            self.send_response(status)
            hdrs = {"Content-Type": "application/json", **(headers or {})}
            hdrs.setdefault("Content-Length", str(len(data)))
            for k, v in hdrs.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _dispatch(self) -> None:
            path = urlsplit(self.path).path
            auth = self._auth()
            hub.calls.append(Call(self.command, unquote(path), bool(auth)))
            try:
                if auth is False:
                    raise _Reply(
                        401,
                        {"error": "Invalid credentials in Authorization header"},
                        {"X-Error-Message": "Invalid credentials in Authorization header"},
                    )
                self._route(path.split("/")[1:], bool(auth))
            except _Reply as r:
                self._send(r.status, r.body, r.headers)

        do_GET = do_POST = do_HEAD = _dispatch

        # routes
        def _route(self, parts: list[str], authed: bool) -> None:
            m = self.command
            if parts[:2] == ["api", "whoami-v2"]:
                if not authed:
                    raise _Reply(401, {"error": "not logged in"})
                return self._send(200, {"name": hub.user, "type": "user", "orgs": []})
            if parts[:3] == ["api", "repos", "create"] and m == "POST":
                return self._create(authed)
            if parts[:2] == ["api", "validate-yaml"] and m == "POST":
                return self._validate_yaml()
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                repo_id = f"{parts[2]}/{parts[3]}"
                rest = parts[4:]
                repo = self._repo(repo_id, authed)
                if not rest and m == "GET":
                    return self._info(repo_id, repo, "main")
                if rest[:1] == ["revision"] and m == "GET":
                    return self._info(repo_id, repo, unquote(rest[1]))
                if rest[:1] == ["tree"] and m == "GET":
                    return self._tree(repo_id, repo, unquote(rest[1]), "/".join(rest[2:]))
                if rest[:1] == ["preupload"] and m == "POST":
                    self._need_write(authed)
                    return self._preupload(repo, unquote(rest[1]))
                if rest[:1] == ["commit"] and m == "POST":
                    self._need_write(authed)
                    return self._commit(repo_id, repo, unquote(rest[1]))
                if rest[:1] == ["branch"] and m == "POST":
                    self._need_write(authed)
                    return self._branch(repo_id, repo, unquote(rest[1]))
            if len(parts) >= 5 and parts[2] == "resolve" and m in ("GET", "HEAD"):
                repo_id = f"{parts[0]}/{parts[1]}"
                repo = self._repo(repo_id, authed)
                return self._resolve(repo_id, repo, unquote(parts[3]), unquote("/".join(parts[4:])))
            raise _Reply(404, {"error": f"no route for {m} {self.path}"})

        def _need_write(self, authed: bool) -> None:
            if not authed:
                raise _Reply(
                    401, {"error": "write needs a token"}, {"X-Error-Code": "RepoNotFound"}
                )

        def _repo(self, repo_id: str, authed: bool) -> Repo:
            repo = hub.repos.get(repo_id)
            if repo is None or (repo.private and not authed):
                raise _Reply(
                    401 if repo is not None else 404,
                    {"error": "Repository not found"},
                    {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
                )
            return repo

        def _commit_of(self, repo: Repo, rev: str) -> str:
            if rev in repo.refs:
                return repo.refs[rev]
            if rev in repo.commits:
                return rev
            raise _not_found("RevisionNotFound", f"Invalid rev id: {rev}")

        def _info(self, repo_id: str, repo: Repo, rev: str) -> None:
            sha = self._commit_of(repo, rev) if repo.commits else None
            files = repo.commits.get(sha, {}) if sha else {}
            self._send(
                200,
                {
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": sha,
                    "private": repo.private,
                    "gated": "manual" if repo.gated else False,
                    "disabled": False,
                    "siblings": [{"rfilename": f} for f in sorted(files)],
                    "tags": [],
                },
            )

        def _tree(self, repo_id: str, repo: Repo, rev: str, sub: str) -> None:
            files = repo.commits[self._commit_of(repo, rev)]
            entries, dirs = [], set()
            for name in sorted(files):
                if sub and not name.startswith(sub.rstrip("/") + "/"):
                    continue
                parent = str(Path(name).parent)
                while parent not in (".", "") and parent not in dirs:
                    dirs.add(parent)
                    entries.append({"type": "directory", "oid": "0" * 40, "path": parent})
                    parent = str(Path(parent).parent)
                entries.append(_tree_file(name, files[name]))
            self._send(200, entries)

        def _resolve(self, repo_id: str, repo: Repo, rev: str, name: str) -> None:
            sha = self._commit_of(repo, rev)
            files = repo.commits[sha]
            if repo.gated:
                raise _Reply(
                    403,
                    {"error": "gated"},
                    {
                        "X-Error-Code": "GatedRepo",
                        "X-Error-Message": "Access to this model is gated",
                    },
                )
            if name not in files:
                raise _not_found("EntryNotFound", "Entry not found", {"X-Repo-Commit": sha})
            data = files[name]
            self._send(
                200,
                data,
                {
                    "Content-Type": "application/octet-stream",
                    "ETag": f'"{git_blob_sha1(data)}"',
                    "X-Repo-Commit": sha,
                    "Content-Length": str(len(data)),
                    "Accept-Ranges": "bytes",
                },
            )

        def _create(self, authed: bool) -> None:
            if not authed:
                raise _Reply(401, {"error": "You must be authenticated"})
            payload = json.loads(self._body())
            repo_id = f"{payload.get('organization') or hub.user}/{payload['name']}"
            url = f"{hub.url}/{repo_id}"
            if repo_id in hub.repos:
                raise _Reply(409, {"error": "You already created this model repo", "url": url})
            hub.add_repo(repo_id, GITATTRIBUTES, private=payload.get("visibility") == "private")
            self._send(200, {"url": url, "name": repo_id})

        def _validate_yaml(self) -> None:
            content = json.loads(self._body())["content"]
            if content.startswith("---"):
                try:
                    meta = yaml.safe_load(content.split("---", 2)[1])
                except yaml.YAMLError as e:
                    raise _Reply(400, {"errors": [{"message": str(e)}]}) from None
                if not isinstance(meta, dict):
                    raise _Reply(400, {"errors": [{"message": "metadata is not a mapping"}]})
            self._send(200, {"errors": [], "warnings": []})

        def _preupload(self, repo: Repo, rev: str) -> None:
            files = repo.commits.get(repo.refs.get(rev, ""), {})
            req = json.loads(self._body())["files"]
            out = []
            for f in req:
                old = files.get(f["path"])
                out.append(
                    {
                        "path": f["path"],
                        "uploadMode": "regular",
                        "shouldIgnore": False,
                        "oid": git_blob_sha1(old) if old is not None else None,
                    }
                )
            self._send(200, {"files": out, "commitOid": repo.refs.get(rev)})

        def _commit(self, repo_id: str, repo: Repo, rev: str) -> None:
            lines = [json.loads(ln) for ln in self._body().splitlines() if ln.strip()]
            if not lines or lines[0].get("key") != "header":
                raise _Reply(400, {"error": "commit payload must start with a header"})
            if rev not in repo.refs and repo.commits:
                raise _not_found("RevisionNotFound", f"Invalid rev id: {rev}")
            files = {}
            for item in lines[1:]:
                if item["key"] != "file" or item["value"].get("encoding") != "base64":
                    raise _Reply(400, {"error": f"unsupported commit operation {item['key']}"})
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            hub.committed.append(sorted(files))
            sha = hub.commit(repo_id, files, rev)
            self._send(
                200,
                {
                    "commitUrl": f"{hub.url}/{repo_id}/commit/{sha}",
                    "commitOid": sha,
                    "pullRequestUrl": None,
                },
            )

        def _branch(self, repo_id: str, repo: Repo, branch: str) -> None:
            if branch in repo.refs:
                raise _Reply(409, {"error": "Reference already exists"})
            start = (json.loads(self._body() or b"{}") or {}).get("startingPoint") or "main"
            repo.refs[branch] = self._commit_of(repo, start)
            self._send(200, {})

    return Handler
