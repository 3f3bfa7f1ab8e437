#!/usr/bin/env python3
"""Records the protobuf bodies the real kubectl sends for `kubectl create …`.

A minimal fake API server on 127.0.0.1 (legacy discovery for the kinds below); every POST body is written to
OUT_DIR/<resource>.bin. Used once to capture tests/fixtures/; re-run to refresh them:

    capture_kubectl.py OUT_DIR kubectl.1.33 create deployment web --image=nginx --port 8080

With `--dry-run=client -o json` kubectl prints its own JSON encoding of the same object instead (the
`.json` fixtures the decoded bodies are compared with).
"""
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RESOURCES = {
    "api/v1": [("namespaces", "Namespace", False), ("configmaps", "ConfigMap", True), ("secrets", "Secret", True),
               ("services", "Service", True), ("serviceaccounts", "ServiceAccount", True), ("pods", "Pod", True),
               ("resourcequotas", "ResourceQuota", True)],
    "apis/apps/v1": [("deployments", "Deployment", True), ("replicasets", "ReplicaSet", True),
                     ("daemonsets", "DaemonSet", True), ("statefulsets", "StatefulSet", True)],
    "apis/batch/v1": [("jobs", "Job", True), ("cronjobs", "CronJob", True)],
    "apis/rbac.authorization.k8s.io/v1": [("roles", "Role", True), ("rolebindings", "RoleBinding", True),
                                          ("clusterroles", "ClusterRole", False),
                                          ("clusterrolebindings", "ClusterRoleBinding", False)],
    "apis/policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "apis/networking.k8s.io/v1": [("ingresses", "Ingress", True)],
    "apis/scheduling.k8s.io/v1": [("priorityclasses", "PriorityClass", False)],
}
VERBS = ["create", "delete", "get", "list", "patch", "update", "watch"]


class Handler(BaseHTTPRequestHandler):
    out_dir = "."

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.path.split("?")[0].strip("/")
        if path == "version":
            return self.reply(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0"})
        if path == "api":
            return self.reply(200, {"kind": "APIVersions", "versions": ["v1"]})
        if path == "apis":
            groups = []
            for gv in RESOURCES:
                if gv.startswith("apis/"):
                    group, version = gv[5:].rsplit("/", 1)
                    v = {"groupVersion": f"{group}/{version}", "version": version}
                    groups.append({"name": group, "versions": [v], "preferredVersion": v})
            return self.reply(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path in RESOURCES:
            gv = path[4:] if path.startswith("api/") else path[5:]
            resources = [{"name": n, "singularName": "", "namespaced": ns, "kind": k, "verbs": VERBS}
                         for n, k, ns in RESOURCES[path]]
            return self.reply(200, {"kind": "APIResourceList", "groupVersion": gv, "resources": resources})
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        resource = self.path.split("?")[0].rstrip("/").split("/")[-1]
        with open(os.path.join(self.out_dir, resource + ".bin"), "wb") as f:
            f.write(body)
        self.reply(201, {"apiVersion": "v1", "kind": "Status", "metadata": {"name": "x"}})


def main():
    Handler.out_dir = sys.argv[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ, KUBECONFIG="/dev/null", HOME=sys.argv[1])
    cmd = [sys.argv[2], "--server", f"http://127.0.0.1:{server.server_address[1]}"] + sys.argv[3:]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    server.shutdown()


if __name__ == "__main__":
    main()
