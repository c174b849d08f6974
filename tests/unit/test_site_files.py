"""The site's files: what is published and served, never through a symbolic link (`nmdc_site.files`)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from nmdc_site.files import FileServer, digests, open_beneath, published_files, request_path
from nmdc_site.grants import GrantRefused


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A served folder with files, links out of it (to a file and to a folder), a link inside it, and a FIFO."""
    secret = tmp_path / "outside" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("the host's secret\n")
    root = tmp_path / "served"
    (root / "sub").mkdir(parents=True)
    (root / "a.tsv").write_text("a\n")
    (root / "sub" / "b.tsv").write_text("b\n")
    (root / "leak.txt").symlink_to(secret)
    (root / "outside-dir").symlink_to(secret.parent, target_is_directory=True)
    (root / "sub" / "again.tsv").symlink_to(root / "a.tsv")
    os.mkfifo(root / "pipe")
    return root


def test_links_are_neither_published_nor_opened(tree: Path):
    assert list(published_files(tree)) == [Path("a.tsv"), Path("sub/b.tsv")]
    for rel in ("leak.txt", "outside-dir/secret.txt", "sub/again.tsv", "pipe", "../outside/secret.txt"):
        with pytest.raises(OSError):
            open_beneath(tree, Path(rel))
    with open_beneath(tree, Path("sub/b.tsv")) as handle:
        assert handle.read() == b"b\n"
    with pytest.raises(OSError):
        digests(Path("leak.txt"), root=tree)


def test_a_folder_swapped_for_a_link_after_the_scan_is_not_followed(tree: Path, tmp_path: Path):
    [_, rel] = list(published_files(tree))
    (tree / "sub").rename(tree / "sub-moved")
    (tree / "sub").symlink_to(tree / "sub-moved", target_is_directory=True)
    with pytest.raises(OSError):
        digests(rel, root=tree)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/a.tsv", Path("a.tsv")),
        ("/sub/b.tsv?x=1", Path("sub/b.tsv")),
        ("/sub%2Fb.tsv", Path("sub/b.tsv")),
        ("/", None),
        ("/sub/", None),
        ("/../etc/passwd", None),
        ("/%2e%2e/etc/passwd", None),
        ("/.hidden", None),
        ("/x.part", None),
        ("/a%00b", None),
    ],
)
def test_request_paths(target, expected):
    assert request_path(target) == expected


def test_the_file_server_serves_files_only_never_through_a_link(tree: Path):
    with FileServer(tree) as server:
        base = f"http://127.0.0.1:{server.port}"
        assert httpx.get(f"{base}/sub/b.tsv").text == "b\n"
        for path in ("/leak.txt", "/outside-dir/secret.txt", "/sub/again.tsv", "/pipe", "/sub", "/"):
            response = httpx.get(base + path)
            assert response.status_code == 404, path
            assert "secret" not in response.text


def test_a_guard_decides_before_anything_is_read(tree: Path):
    seen = []

    def guard(rel: Path, headers) -> None:
        seen.append(rel)
        if headers.get("Authorization") != "Bearer ok":
            raise GrantRefused(401, "an access grant is needed")

    with FileServer(tree, guard=guard) as server:
        base = f"http://127.0.0.1:{server.port}"
        refused = httpx.get(f"{base}/a.tsv")
        assert refused.status_code == 401 and refused.json() == {"detail": "an access grant is needed"}
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert httpx.get(f"{base}/missing.tsv").status_code == 401  # nothing learnt about what exists
        assert httpx.get(f"{base}/a.tsv", headers={"Authorization": "Bearer ok"}).text == "a\n"
        assert httpx.get(f"{base}/leak.txt", headers={"Authorization": "Bearer ok"}).status_code == 404
    assert seen == [Path("a.tsv"), Path("missing.tsv"), Path("a.tsv"), Path("leak.txt")]
