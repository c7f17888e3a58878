#!/usr/bin/env python3
"""A minimal CNI runtime for knit's e2e suites, doing what SPEC.md section 3
says a runtime does with a network configuration list (what libcni does for
containerd), so that plugins are run exactly as on a node:

  cni_runtime.py ADD|DEL|CHECK CONFLIST CACHE [ANNOTATIONS_JSON]
  cni_runtime.py GC CONFLIST VALID_ATTACHMENTS_JSON
  cni_runtime.py STATUS CONFLIST

ADD runs the plugins in order, each given the previous result as
prevResult, and stores the last result in CACHE; DEL runs them in reverse
and CHECK in order, both with the cached result as prevResult. runtimeConfig
carries io.kubernetes.cri.pod-annotations to plugins that declare the
capability, as containerd's CRI does. CNI_CONTAINERID, CNI_NETNS,
CNI_IFNAME, CNI_ARGS and CNI_PATH come from the environment. Prints the
final result (or the failing plugin's output) and exits with its status.
"""
import json
import os
import subprocess
import sys


def run(plugin_type, command, conf):
    path = None
    for d in os.environ["CNI_PATH"].split(":"):
        if os.access(os.path.join(d, plugin_type), os.X_OK):
            path = os.path.join(d, plugin_type)
            break
    if path is None:
        print(json.dumps({"code": 99, "msg": "plugin %s not found" % plugin_type}))
        sys.exit(1)
    env = dict(os.environ, CNI_COMMAND=command)
    p = subprocess.run([path], input=json.dumps(conf).encode(), env=env, capture_output=True)
    sys.stderr.write(p.stderr.decode(errors="replace"))
    return p.returncode, p.stdout.decode(errors="replace")


def request_conf(netconf, plugin, prev, annotations):
    conf = {k: v for k, v in plugin.items() if k != "capabilities"}
    conf["cniVersion"] = netconf["cniVersion"]
    conf["name"] = netconf["name"]
    caps = plugin.get("capabilities", {})
    if annotations is not None and caps.get("io.kubernetes.cri.pod-annotations"):
        conf["runtimeConfig"] = {"io.kubernetes.cri.pod-annotations": annotations}
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def main():
    command, conflist = sys.argv[1], sys.argv[2]
    with open(conflist) as f:
        netconf = json.load(f)
    plugins = netconf["plugins"]
    if command == "STATUS" or command == "GC":
        status, out = 0, ""
        for plugin in plugins:
            conf = request_conf(netconf, plugin, None, None)
            if command == "GC":
                conf["cni.dev/valid-attachments"] = json.loads(sys.argv[3])
            rc, o = run(plugin["type"], command, conf)
            if rc != 0:
                status, out = rc, o
                if command == "STATUS":
                    break
        sys.stdout.write(out)
        sys.exit(status)
    cache = sys.argv[3]
    annotations = json.loads(sys.argv[4]) if len(sys.argv) > 4 else None
    if command == "ADD":
        prev = None
        for plugin in plugins:
            rc, out = run(plugin["type"], "ADD", request_conf(netconf, plugin, prev, annotations))
            if rc != 0:
                sys.stdout.write(out)
                sys.exit(rc)
            prev = json.loads(out)
        with open(cache, "w") as f:
            json.dump(prev, f)
        print(json.dumps(prev))
        return
    prev = None
    if os.path.exists(cache):
        with open(cache) as f:
            prev = json.load(f)
    order = reversed(plugins) if command == "DEL" else plugins
    for plugin in order:
        rc, out = run(plugin["type"], command, request_conf(netconf, plugin, prev, annotations))
        if rc != 0:
            sys.stdout.write(out)
            sys.exit(rc)
    if command == "DEL" and os.path.exists(cache):
        os.unlink(cache)


main()
