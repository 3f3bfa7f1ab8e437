#!/usr/bin/env python3
"""Extracts per-field facts from Kubernetes' Go API types (k8s.io/api + k8s.io/apimachinery meta/v1).

Run against git checkouts of kubernetes/api and kubernetes/apimachinery at the tag matching the served
Kubernetes version (v0.33.x for k8s-openapi's v1_33):

    extract_go_facts.py API_REPO APIMACHINERY_REPO TAG > facts.json

Output: {definition: {"struct_markers": {...}, "fields": {json_name: {"markers": {...}, "pointer": bool,
"omitempty": bool, "go_type": str}}}}. `render_tables.py` (openapi) and the protobuf generator read it.
Only facts are taken: comment markers (+listType, +patchStrategy ...), json tags and pointer-ness.
"""
import json
import re
import subprocess
import sys

API_PACKAGES = [
    "core/v1", "apps/v1", "batch/v1", "rbac/v1", "autoscaling/v1", "autoscaling/v2", "policy/v1",
    "networking/v1", "scheduling/v1", "coordination/v1", "discovery/v1", "storage/v1", "authentication/v1",
    "authorization/v1", "certificates/v1", "events/v1", "node/v1", "admissionregistration/v1",
    "flowcontrol/v1",
]

MARKER = re.compile(r"^\s*//\s*\+(listType|listMapKey|patchMergeKey|patchStrategy|mapType|structType)=(\S+)")
FIELD = re.compile(r"^\s*([A-Z]\w*)\s+(\S+)\s+`([^`]*)`")


def git_show(repo, tag, path):
    return subprocess.run(["git", "-C", repo, "show", f"{tag}:{path}"], capture_output=True, text=True,
                          check=True).stdout


def add_marker(markers, key, value):
    if key == "listMapKey":
        markers.setdefault(key, []).append(value)
    else:
        markers[key] = value


def parse(source, prefix, out):
    pending = {}
    struct = None
    for line in source.splitlines():
        m = MARKER.match(line)
        if m:
            add_marker(pending, m.group(1), m.group(2))
            continue
        if struct is None:
            m = re.match(r"^type (\w+) struct \{", line)
            if m:
                struct = out.setdefault(prefix + m.group(1), {"struct_markers": pending, "fields": {}})
                pending = {}
            elif not line.startswith("//"):
                pending = {}
            continue
        if line.startswith("}"):
            struct = None
            pending = {}
            continue
        m = FIELD.match(line)
        if m:
            tags = m.group(3)
            j = re.search(r'json:"([^"]*)"', tags)
            if j and j.group(1) and not j.group(1).startswith(","):
                parts = j.group(1).split(",")
                for t in ("patchStrategy", "patchMergeKey"):
                    s = re.search(t + r':"([^"]*)"', tags)
                    if s and t not in pending:
                        pending[t] = s.group(1)
                struct["fields"][parts[0]] = {
                    "markers": pending,
                    "pointer": m.group(2).startswith("*"),
                    "omitempty": "omitempty" in parts[1:],
                    "go_type": m.group(2),
                }
            pending = {}
        elif not line.strip().startswith("//"):
            pending = {}


def main():
    api, apimachinery, tag = sys.argv[1:4]
    out = {}
    for pkg in API_PACKAGES:
        group, version = pkg.split("/")
        parse(git_show(api, tag, f"{pkg}/types.go"), f"io.k8s.api.{group}.{version}.", out)
    for f in ("types.go", "time.go", "micro_time.go"):
        try:
            src = git_show(apimachinery, tag, f"pkg/apis/meta/v1/{f}")
        except subprocess.CalledProcessError:
            continue
        parse(src, "io.k8s.apimachinery.pkg.apis.meta.v1.", out)
    json.dump(out, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
