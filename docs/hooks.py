"""MkDocs hook: publish the benchmark chart and tables from bench/, where the
benchmark report writes them, instead of keeping copies under docs/."""
import os

from mkdocs.structure.files import File

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FROM_BENCH = ["bench/results.png", "bench/results.md"]


def on_files(files, config):
    for path in _FROM_BENCH:
        files.append(File(path, src_dir=_ROOT, dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
