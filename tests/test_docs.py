"""README against the code: the dataset layout (tables and their columns, arrays, chunk and shard shapes, the
compressor), the defaults it quotes and every flag it shows. Each check is a function of (README text, what
the code says) returning its problems, so each test also shows that a renamed column, array, flag or codec
is caught."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text()


def _layout_block(text: str) -> str:
    """The fenced block under '### Dataset layout'."""
    section = text.split("### Dataset layout", 1)[1]
    return section.split("```", 2)[1]


def _listed_columns(text: str, table: str) -> list[str]:
    """The names after 'columns:' in the `tables/<table>/` entry, up to its full stop."""
    entry = _layout_block(text).split(f"tables/{table}/", 1)[1]
    listed = re.search(r"columns:(.*?)\.(\s|$)", entry, re.S)
    assert listed, f"README: tables/{table}/ has no 'columns: ….' list"
    names = [n.strip() for n in listed.group(1).replace("\n", " ").split(",")]
    out = []
    for n in names:  # "digest_{left,right}" spells out one column per name in the braces
        m = re.fullmatch(r"(\w*)\{([\w|]+)\}(\w*)", n)
        out += [m.group(1) + x + m.group(3) for x in m.group(2).split("|")] if m else [n]
    return out


def column_problems(text: str, columns: dict[str, list[str]]) -> list[str]:
    """README's column lists against {table: the schema's column names, in order}."""
    problems = []
    for table, want in columns.items():
        got = _listed_columns(text, table)
        if got != want:
            missing, extra = [c for c in want if c not in got], [c for c in got if c not in want]
            problems.append(f"tables/{table}/: README lacks {missing}, names {extra} the schema has not")
    return problems


def array_problems(text: str, arrays: dict[str, tuple[str, int]], samples_per_shard: int) -> list[str]:
    """README's `data.zarr/` entry against {array: (dtype, rank)} and the default shard size."""
    entry = _layout_block(text).split("data.zarr/", 1)[1].split("previews/", 1)[0]
    said: dict[str, tuple[str, int]] = {}
    for names, shape, dtype in re.findall(r"((?:\w+, )*\w+) \(N,H,W(,3)?\) (\w+)", entry):
        for name in names.split(", "):
            said[name] = (dtype, 4 if shape else 3)
    problems = [
        f"data.zarr/: README says {n} is {said.get(n)}, the code {a}"
        for n, a in arrays.items()
        if said.get(n) != a
    ]
    problems += [
        f"data.zarr/: README names {n}, which the code does not write" for n in said if n not in arrays
    ]
    if "chunk_shape (1,H,W[,3])" not in entry:
        problems.append("data.zarr/: README's chunk_shape is not (1,H,W[,3])")
    if f"shard_shape ({samples_per_shard},H,W[,3])" not in entry:
        problems.append(f"data.zarr/: README's shard_shape is not the default {samples_per_shard} samples")
    return problems


def compressor_problems(text: str, name: str, codec: dict) -> list[str]:
    """README's `data.zarr/` compressor against the code's (its name and its Blosc settings)."""
    entry = _layout_block(text).split("data.zarr/", 1)[1]
    m = re.search(r"`(blosc-[\w-]+)`: Blosc (\w+), level (\d+), (byte|bit|no) shuffle", entry)
    if not m:
        return [
            "data.zarr/: README names no compressor as `blosc-…`: Blosc <cname>, level <n>, <kind> shuffle"
        ]
    conf = codec["configuration"]
    said = (
        m.group(1),
        m.group(2),
        int(m.group(3)),
        {"byte": "shuffle", "bit": "bitshuffle", "no": "noshuffle"}[m.group(4)],
    )
    want = (name, conf["cname"], conf["clevel"], conf["shuffle"])
    return [] if said == want else [f"data.zarr/: README says the compressor is {said}, the code {want}"]


def _code_blocks(text: str) -> list[str]:
    return text.split("```")[1::2]


def _commands(text: str) -> list[tuple[str, list[str]]]:
    """(command words, flags) of every `labeler …` line in README's code blocks (continuations joined)."""
    out = []
    for block in _code_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            m = re.match(
                r"\s*labeler ((?:[a-z][a-z0-9-]*)(?: (?:coco|ytvis|hf|rerun|ros|webdataset|lerobot))?)\b(.*)",
                line,
            )
            if m:
                out.append(
                    (m.group(1), re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group(2).split("#")[0]))
                )
    return out


def flag_problems(text: str, options: dict[str, set[str]]) -> list[str]:
    """Every `labeler <cmd> … --flag` in README's code blocks is a flag of <cmd>; every `--flag` written
    anywhere in README is a flag of some command."""
    problems = []
    for command, flags in _commands(text):
        if command not in options:
            problems.append(f"README shows `labeler {command}`, which is no command")
            continue
        problems += [f"README: `labeler {command}` has no {f}" for f in flags if f not in options[command]]
    every = set().union(*options.values()) | {"--help", "--verbose"}
    spans = [s for s in re.findall(r"`([^`\n]+)`", text) if s.startswith(("--", "labeler "))]
    for flag in sorted({f for s in spans for f in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*\*?)", s)}):
        if flag in OTHER_TOOLS:
            continue
        if flag.endswith("*") and any(f.startswith(flag[:-1]) for f in every):  # `--sam2-*`
            continue
        if flag not in every:
            problems.append(f"README mentions {flag}, which no command takes")
    return problems


# Flags README quotes inline that belong to another program, and which.
OTHER_TOOLS = {
    "--resources": "`dask worker` (an external cluster's workers)",
    "--foundation-stereo-src": "`benchmarks/gpu_check.py` (the GPU check)",
}


# ------------------------------------------------------------------ what the code says


def _schema_columns() -> dict[str, list[str]]:
    from labeler.dataset.tables import objects_schema, samples_schema

    return {"samples": samples_schema().names, "objects": objects_schema().names}


def _arrays() -> dict[str, tuple[str, int]]:
    from labeler.dataset.shards import store_layout

    return {s.name: (s.dtype, len(s.shape)) for s in store_layout(1, 4, 4, 32).arrays}


def _cli_options() -> dict[str, set[str]]:
    import typer.main

    from labeler.cli.main import app

    out: dict[str, set[str]] = {}

    def walk(cmd, path: str) -> None:
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}".strip())
        else:
            out[path] = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}

    walk(typer.main.get_command(app), "")
    return out


# ------------------------------------------------------------------ the tests


def test_table_columns_are_the_schemas(readme):
    columns = _schema_columns()
    assert column_problems(readme, columns) == []
    renamed = {**columns, "objects": [c if c != "depth_m_p10" else "depth_p10_m" for c in columns["objects"]]}
    (problem,) = column_problems(readme, renamed)
    assert "lacks ['depth_p10_m']" in problem and "names ['depth_m_p10']" in problem
    (problem,) = column_problems(readme.replace("n_objects_dropped", "n_dropped"), columns)
    assert "lacks ['n_objects_dropped']" in problem


def test_arrays_and_shapes_are_the_layout(readme):
    from labeler.dataset.shards import DEFAULT_SAMPLES_PER_SHARD

    arrays = _arrays()
    assert array_problems(readme, arrays, DEFAULT_SAMPLES_PER_SHARD) == []
    assert array_problems(readme, {**arrays, "confidence": ("float16", 3)}, DEFAULT_SAMPLES_PER_SHARD)
    (problem,) = array_problems(readme, arrays, 64)
    assert "64 samples" in problem


def test_compressor_is_the_code_s(readme):
    from labeler.dataset.shards import COMPRESSOR, _codecs

    assert compressor_problems(readme, COMPRESSOR, _codecs()[COMPRESSOR].to_dict()) == []
    (problem,) = compressor_problems(
        readme, "blosc-zstd-3-shuffle", _codecs()["blosc-zstd-3-shuffle"].to_dict()
    )
    assert "zstd" in problem


def test_quoted_defaults_are_the_configs(readme):
    """FoundationStereo's precision as README states it: the config's defaults."""
    from data_schema.backends import FoundationStereoConfig

    fields = FoundationStereoConfig.model_fields
    dtype = fields["amp_dtype"].default
    assert fields["mixed_precision"].default is None  # "as the release's cfg.yaml says"
    assert f"autocast to {dtype} on CUDA when the release's cfg.yaml asks for mixed precision" in readme
    assert "float32 on the CPU" in readme
    other = {"float16": "bfloat16", "bfloat16": "float16"}[dtype]
    assert f"autocast to {other} on CUDA when" not in readme


def test_every_flag_shown_exists(readme):
    options = _cli_options()
    assert flag_problems(readme, options) == []
    missing = {k: v - {"--stereo-weights"} for k, v in options.items()}
    problems = flag_problems(readme, missing)
    assert "README: `labeler pseudo-label` has no --stereo-weights" in problems
    assert "README mentions --stereo-weights, which no command takes" in problems


RESULTS = README.parent / "benchmarks" / "RESULTS.md"
# what a command that produces figures looks like: a benchmark script, a make target, a labeler command
_COMMAND = re.compile(r"`[^`]*(benchmarks/\w+\.py|python -m benchmarks\.|make [a-z][a-z-]*|labeler [a-z-]+)")


def tables_without_command(text: str) -> list[str]:
    """Each Markdown table of RESULTS.md whose section (from its `##` / `###` heading to the table's end)
    quotes no command in backticks."""
    lines = text.splitlines()
    problems, heading = [], 0
    for i, line in enumerate(lines):
        if re.match(r"#{1,3} ", line):
            heading = i
        starts = line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|"))
        if starts and not _COMMAND.search("\n".join(lines[heading : i + 1])):
            problems.append(f"RESULTS.md:{i + 1} ({lines[heading].strip('# ')}): a table without its command")
    return problems


def test_every_results_table_has_its_command():
    text = RESULTS.read_text()
    assert tables_without_command(text) == []
    bare = "## A section\n\nSome figures:\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
    assert tables_without_command(bare) == ["RESULTS.md:5 (A section): a table without its command"]
    assert tables_without_command(bare.replace("Some figures:", "`python benchmarks/bench_x.py`:")) == []
