"""The repository's own files, as the checks on the repository (layout tree, links, scans) see them: what git
tracks, that is what a commit holds (staged new files included), and nothing a user keeps beside it untracked."""
import os
import subprocess

from local_runs import ROOT


def tracked_files(root=ROOT):
    """Paths (relative, with /) of the files git tracks under ``root`` that exist in the working tree."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached"], cwd=root, capture_output=True, check=True).stdout
    return sorted({p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(root, p))})
