"""Rebuild the field lists of tests/observability/reference/ from the projects' own sources at a tag.

Reads a git repository (a bare mirror or any clone; nothing is built or run) with ``git show`` and
``git grep`` at the tag that matches the image deploy/docker-compose.yml pins, and writes one file
named by that version. See README.md beside this file for the whole procedure.

    python tests/observability/reference/refresh.py tempo --git-dir ../tempo.git --tag v3.0.3
    python tests/observability/reference/refresh.py loki --git-dir ../loki.git --tag v3.7.6
    python tests/observability/reference/refresh.py otelcol --git-dir ../opentelemetry-collector.git \
        --tag v0.159.0 --otelconf-git-dir ../opentelemetry-go-contrib.git --otelconf-tag otelconf/v0.25.0 \
        [--contrib-git-dir ../opentelemetry-collector-contrib.git]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

# --- git ---------------------------------------------------------------------------------------------


def git(git_dir: str, *args: str) -> str:
    done = subprocess.run(["git", f"--git-dir={git_dir}", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)} in {git_dir} failed: {done.stderr.strip()}")
    return done.stdout


def show(git_dir: str, tag: str, path: str) -> str:
    return git(git_dir, "show", f"{tag}:{path}")


def go_files(git_dir: str, tag: str, *paths: str) -> Iterator[str]:
    """The non-test Go sources under ``paths`` at ``tag``."""
    listing = git(git_dir, "ls-tree", "-r", "--name-only", tag, "--", *paths)
    for path in listing.splitlines():
        if path.endswith(".go") and not path.endswith("_test.go") and "/testdata/" not in path:
            yield path


def struct_tags(git_dir: str, tag: str, kind: str, *paths: str, maps: bool = False) -> set[str]:
    """Every field name a ``kind`` struct tag (``yaml`` or ``mapstructure``) gives under ``paths``;
    with ``maps``, only the names of fields that are Go maps (their keys are free-form)."""
    field = r"map\[[^\]]+\][^\s`]*\s+`[^`]*" if maps else ""
    pattern = re.compile(rf'{field}{kind}:"([^",]*)')
    names: set[str] = set()
    for path in go_files(git_dir, tag, *paths):
        names.update(name for name in pattern.findall(show(git_dir, tag, path)) if name and name != "-")
    return names


# --- Tempo: the manifest of every option --------------------------------------------------------------


def manifest_paths(node: Any, prefix: str = "") -> Iterator[str]:
    """Key paths of the manifest; list items share their list's path, free-form values end in '.*'."""
    if isinstance(node, dict):
        if not node and prefix:
            yield f"{prefix}.*"
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            yield path
            yield from manifest_paths(value, path)
    elif isinstance(node, list):
        dicts = [item for item in node if isinstance(item, dict)]
        if not dicts:
            yield f"{prefix}.*"
        for item in dicts:
            yield from manifest_paths(item, prefix)
    elif node is None:
        yield f"{prefix}.*"


def tempo(git_dir: str, tag: str) -> tuple[str, str]:
    version = tag.removeprefix("v")
    manifest = show(git_dir, tag, "docs/sources/tempo/configuration/manifest.md")
    block = re.search(r"```yaml\n(.*?)```", manifest, re.DOTALL)
    if block is None:
        raise SystemExit("manifest.md has no yaml block")
    paths = sorted(set(manifest_paths(yaml.safe_load(block.group(1)))))
    sources = (["cmd", "modules", "pkg", "tempodb"], ["vendor/github.com/prometheus/prometheus/config"])
    names = sorted(set().union(*(struct_tags(git_dir, tag, "yaml", *paths) for paths in sources)))
    maps = sorted(set().union(*(struct_tags(git_dir, tag, "yaml", *paths, maps=True) for paths in sources)))
    lines = [
        f"# Tempo {version} configuration key paths, from grafana/tempo tag {tag}:",
        "# docs/sources/tempo/configuration/manifest.md (generated from the defaults: every option).",
        "# A line ending in '.*' is a map or list whose contents are free-form.",
        *paths,
        f"# Names: every yaml field name of Tempo {version}'s Go configuration structs (cmd/, modules/, pkg/,",
        "# tempodb/, and the vendored Prometheus config of remote_write), for keys the manifest leaves out",
        "# (fields omitted when empty). A name is accepted only below a key that is itself accepted.",
        *(f"name: {name}" for name in names),
        "# Maps: the names among those that are Go maps, whose keys are free-form.",
        *(f"map: {name}" for name in maps),
    ]
    return f"tempo-{version}.txt", "\n".join(lines) + "\n"


# --- Loki: the configuration reference ------------------------------------------------------------------

_FIELD = re.compile(r"^(?P<indent> *)\[(?P<key>[^:\]]*): (?P<type><[^>]*>|[^|\]]*)")
_BLOCK = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_]+):\s*(?:<(?P<type>[^>]*)>)?\s*$")


def loki_blocks(reference: str) -> dict[str, list[str]]:
    """The yaml lines of the root block ('') and of every named block (``### name``)."""
    blocks: dict[str, list[str]] = {}
    name = None
    for section in re.split(r"^(### .*)$", reference, flags=re.MULTILINE):
        heading = re.match(r"### (\S+)$", section.strip())
        if heading:
            name = heading.group(1).strip("`")
            continue
        body = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
        if body and name is not None:
            blocks["" if name == "Supported" else name] = body.group(1).splitlines()
        name = None
    return blocks


def loki_paths(blocks: dict[str, list[str]], block: str, prefix: str, seen: tuple[str, ...]) -> Iterator[str]:
    """Key paths of ``block``, following ``<block_name>`` references (and lists of them)."""
    stack: list[tuple[int, str]] = []
    for line in blocks[block]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _FIELD.match(line) or _BLOCK.match(line)
        if match is None:
            continue
        indent = len(match.group("indent"))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else prefix
        key = match.group("key")
        if not key:  # "[: <map of string to …>]": the parent's keys are free-form
            yield f"{parent}.*"
            continue
        path = f"{parent}.{key}" if parent else key
        yield path
        kind = (match.group("type") or "").strip("<>")
        target = re.sub(r"^list of (\w+?)s$", r"\1", kind)
        if target and target in blocks and target not in seen:
            yield from loki_paths(blocks, target, path, (*seen, target))
        elif kind.startswith("map of"):
            yield f"{path}.*"
        if match.re is _BLOCK and not kind:
            stack.append((indent, path))


def loki(git_dir: str, tag: str) -> tuple[str, str]:
    version = tag.removeprefix("v")
    reference = show(git_dir, tag, "docs/sources/shared/configuration.md")
    reference = reference.replace("### Supported contents and default values of `loki.yaml`", "### Supported")
    blocks = loki_blocks(reference)
    paths = sorted(set(loki_paths(blocks, "", "", ())))
    lines = [
        f"# Loki {version} configuration key paths, from grafana/loki tag {tag}:",
        "# docs/sources/shared/configuration.md (generated from the config structs), with every",
        "# referenced block (<server>, <list of period_configs>, …) expanded in place. A line ending in",
        "# '.*' is a map whose keys are free-form.",
        *paths,
    ]
    return f"loki-{version}.txt", "\n".join(lines) + "\n"


# --- OpenTelemetry Collector (contrib distribution) ---------------------------------------------------------

# type -> (kind, directories of the core repository whose structs make its configuration)
CORE_COMPONENTS = {
    "otlp": ("receivers", ["receiver/otlpreceiver"]),
    "memory_limiter": ("processors", ["processor/memorylimiterprocessor", "internal/memorylimiter"]),
    "batch": ("processors", ["processor/batchprocessor"]),
    "otlp_grpc": ("exporters", ["exporter/otlpexporter", "exporter/exporterhelper"]),
    "otlp_http": ("exporters", ["exporter/otlphttpexporter", "exporter/exporterhelper"]),
    "debug": ("exporters", ["exporter/debugexporter", "exporter/exporterhelper"]),
}
# type -> (kind, directories of the contrib repository)
CONTRIB_COMPONENTS = {
    "redaction": ("processors", ["processor/redactionprocessor"]),
    "transform": ("processors", ["processor/transformprocessor"]),
    "resource": ("processors", ["processor/resourceprocessor", "internal/coreinternal/attraction"]),
    "health_check": ("extensions", ["extension/healthcheckextension"]),
}


def component_type(git_dir: str, tag: str, directory: str) -> tuple[str, str | None]:
    """A component's type and its deprecated alias, from its metadata.yaml."""
    metadata = yaml.safe_load(show(git_dir, tag, f"{directory}/metadata.yaml"))
    return str(metadata["type"]), metadata.get("deprecated_type")


def flow(names: Iterable[str]) -> str:
    return "[" + ", ".join(sorted(names)) + "]"


def otelcol(args: argparse.Namespace) -> tuple[str, str]:
    core, tag = args.git_dir, args.tag
    version = tag.removeprefix("v")
    shared = struct_tags(core, tag, "mapstructure", "config")
    service = struct_tags(core, tag, "mapstructure", "service", "otelcol")
    schema = show(args.otelconf_git_dir, args.otelconf_tag, "otelconf/v0.3.0/generated_config.go")
    service |= {name for name in re.findall(r'mapstructure:"([^",]*)', schema) if name and name != "-"}
    lines = [
        f"# OpenTelemetry Collector Contrib {version} (image otel/opentelemetry-collector-contrib:{version}):",
        "# configuration field names (mapstructure tags), by component type. Core components, config/ and",
        f"# service/: open-telemetry/opentelemetry-collector tag {tag}; the service's telemetry schema:",
        f"# open-telemetry/opentelemetry-go-contrib tag {args.otelconf_tag} (otelconf/v0.3.0, the version",
        f"# service/go.mod requires at {tag}).",
        "shared:  # config/: confighttp, configgrpc, configtls, … (every component embeds some of them)",
        f"  {flow(shared)}",
        "service:  # service/, otelcol/ and otelconf's schema",
        f"  {flow(service)}",
        "components:",
    ]
    for name, (kind, directories) in CORE_COMPONENTS.items():
        found, deprecated = component_type(core, tag, directories[0])
        if found != name:
            raise SystemExit(f"{directories[0]} is of type {found}, not {name}: update CORE_COMPONENTS")
        fields = struct_tags(core, tag, "mapstructure", *directories)
        alias = f", deprecated_type: {deprecated}" if deprecated else ""
        lines.append(f"  {name}: {{kind: {kind}, source: {directories[0]}{alias}, fields: {flow(fields)}}}")
    lines += contrib(args)
    return f"otelcol-contrib-{version}.yaml", "\n".join(lines) + "\n"


def contrib(args: argparse.Namespace) -> list[str]:
    """The contrib components' lines: read at the tag when a checkout is given, else kept from the
    previous file (whose comment says where they came from)."""
    if args.contrib_git_dir:
        lines = [f"  # contrib: open-telemetry/opentelemetry-collector-contrib tag {args.tag}"]
        for name, (kind, directories) in CONTRIB_COMPONENTS.items():
            found, _ = component_type(args.contrib_git_dir, args.tag, directories[0])
            if found != name:
                raise SystemExit(f"{directories[0]} is of type {found}, not {name}: update CONTRIB_COMPONENTS")
            fields = struct_tags(args.contrib_git_dir, args.tag, "mapstructure", *directories)
            lines.append(f"  {name}: {{kind: {kind}, source: {directories[0]}, fields: {flow(fields)}}}")
        return lines
    if not args.previous:
        raise SystemExit("without --contrib-git-dir, name the --previous file to keep the contrib components of")
    previous = Path(args.previous).read_text().splitlines()
    start = next((i for i, line in enumerate(previous) if line.startswith("  # contrib:")), None)
    if start is None:
        raise SystemExit(f"{args.previous} has no '  # contrib:' section")
    return previous[start:]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("project", choices=["tempo", "loki", "otelcol"])
    parser.add_argument("--git-dir", required=True, help="the project's repository (bare or not)")
    parser.add_argument("--tag", required=True, help="the release tag the image is built from")
    parser.add_argument("--otelconf-git-dir", help="otelcol: open-telemetry/opentelemetry-go-contrib")
    parser.add_argument("--otelconf-tag", help="otelcol: the otelconf/vX tag the collector's service/go.mod requires")
    parser.add_argument("--contrib-git-dir", help="otelcol: open-telemetry/opentelemetry-collector-contrib")
    parser.add_argument("--previous", help="otelcol without --contrib-git-dir: the file to keep contrib fields from")
    args = parser.parse_args(argv)
    if args.project == "tempo":
        name, text = tempo(args.git_dir, args.tag)
    elif args.project == "loki":
        name, text = loki(args.git_dir, args.tag)
    else:
        if not (args.otelconf_git_dir and args.otelconf_tag):
            parser.error("otelcol needs --otelconf-git-dir and --otelconf-tag")
        name, text = otelcol(args)
    (HERE / name).write_text(text)
    sys.stdout.write(f"wrote {HERE / name}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
