#!/usr/bin/python3
"""Checks deploy/systemd and deploy/k8s: the files parse, the pieces fit
together (selectors, volumes, config keys), and every flag the configs set
is one the binaries accept (from their --help).

usage: check_deploy.py DEPLOY_DIR BINARY...   (shoal-node, shoal-router, ...)
Exit 0 when all is well, 1 with one line per problem, 77 (skip) without
python3-yaml.
"""
import configparser
import os
import re
import shutil
import subprocess
import sys
import tempfile

try:
    import yaml
except ImportError:
    print("SKIP: python3-yaml is not installed")
    sys.exit(77)

deploy = sys.argv[1]
bins = {os.path.basename(b): b for b in sys.argv[2:]}
problems = []


def flags_of(binary):
    out = subprocess.run([binary, "--help"], capture_output=True, text=True,
                         timeout=30).stdout
    return set(re.findall(r"^  --([a-z][a-z0-9-]*)", out, re.M))


def check_conf(text, allowed, where):
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([a-z][a-z0-9-]*)\s*=\s*(.*)$", line)
        if not m:
            problems.append(f"{where}:{n}: not a `name = value` line")
        elif m.group(1) not in allowed:
            problems.append(f"{where}:{n}: unknown flag --{m.group(1)}")


flags = {name: flags_of(path) for name, path in bins.items()}
if any(not f for f in flags.values()):
    problems.append("could not read the flags from --help")


def binary_for(name):
    """The shoal binary a unit or config key names (node by default)."""
    for b in bins:
        if b != "shoal-node" and b.split("-", 1)[1] in name:
            return b
    return "shoal-node"

# ---- systemd ---------------------------------------------------------------
sd = os.path.join(deploy, "systemd")
units = sorted(f for f in os.listdir(sd) if f.endswith(".service"))
if not units:
    problems.append("no systemd units")
for u in units:
    path = os.path.join(sd, u)
    cp = configparser.ConfigParser(strict=True, interpolation=None)
    cp.optionxform = str
    try:
        cp.read(path)
    except configparser.Error as e:
        problems.append(f"{u}: {e}")
        continue
    for sec in ("Unit", "Service", "Install"):
        if not cp.has_section(sec):
            problems.append(f"{u}: no [{sec}]")
    exe = cp.get("Service", "ExecStart", fallback="").split()
    want = binary_for(u)
    if want not in bins:
        problems.append(f"{u}: no {want} binary given to check it against")
        continue
    if not exe or os.path.basename(exe[0]) != want or "--config" not in exe:
        problems.append(f"{u}: ExecStart must run {want} --config FILE")
        continue
    # The comment block documents a config: its flags must exist.
    sample = "\n".join(l[1:].strip() for l in open(path)
                       if re.match(r"^#\s+[a-z-]+ = ", l))
    check_conf(sample, flags[want], u)
    # systemd's own verifier, with ExecStart pointing at the built binary
    if shutil.which("systemd-analyze"):
        with tempfile.TemporaryDirectory() as d:
            inst = u.replace("@.service", "@1.service")
            text = open(path).read().replace(exe[0],
                                             os.path.abspath(bins[want]))
            open(os.path.join(d, inst), "w").write(text)
            r = subprocess.run(["systemd-analyze", "verify", "--man=no",
                                os.path.join(d, inst)],
                               capture_output=True, text=True, timeout=60)
            for line in (r.stdout + r.stderr).splitlines():
                if inst in line:
                    problems.append(f"{u}: systemd-analyze: {line}")

# ---- Kubernetes --------------------------------------------------------------
k8 = os.path.join(deploy, "k8s")
docs = []
for f in sorted(os.listdir(k8)):
    if f.endswith((".yaml", ".yml")):
        try:
            docs += [(f, d) for d in yaml.safe_load_all(open(os.path.join(k8, f)))
                     if d is not None]
        except yaml.YAMLError as e:
            problems.append(f"{f}: {e}")
kinds = {}
for f, d in docs:
    for key in ("apiVersion", "kind", "metadata"):
        if key not in d:
            problems.append(f"{f}: a document without {key}")
    kinds.setdefault(d.get("kind"), []).append(d)
for kind in ("ConfigMap", "StatefulSet", "Deployment", "Service"):
    if kind not in kinds:
        problems.append(f"k8s: no {kind}")
workload_labels = []
for d in kinds.get("StatefulSet", []) + kinds.get("Deployment", []):
    name = d["metadata"]["name"]
    spec = d.get("spec", {})
    sel = spec.get("selector", {}).get("matchLabels", {})
    labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
    if not sel or any(labels.get(k) != v for k, v in sel.items()):
        problems.append(f"{name}: selector does not match the pod labels")
    workload_labels.append(labels)
    pod = spec.get("template", {}).get("spec", {})
    vols = {v["name"] for v in pod.get("volumes", [])}
    vols |= {v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])}
    for c in pod.get("containers", []):
        for m in c.get("volumeMounts", []):
            if m["name"] not in vols:
                problems.append(f"{name}: mounts unknown volume {m['name']}")
        ports = {p.get("name") for p in c.get("ports", [])}
        for probe in ("readinessProbe", "livenessProbe"):
            p = c.get(probe, {}).get("httpGet")
            if p and p.get("port") not in ports:
                problems.append(f"{name}: {probe} on unknown port")
    if d["kind"] == "StatefulSet":
        if not spec.get("volumeClaimTemplates"):
            problems.append(f"{name}: nodes need persistent volumes")
        svc = spec.get("serviceName")
        if not any(s["metadata"]["name"] == svc and
                   s["spec"].get("clusterIP") == "None"
                   for s in kinds.get("Service", [])):
            problems.append(f"{name}: no headless Service {svc}")
for s in kinds.get("Service", []):
    sel = s.get("spec", {}).get("selector", {})
    if not any(all(l.get(k) == v for k, v in sel.items())
               for l in workload_labels):
        problems.append(f"Service {s['metadata']['name']}: selects no pods")
for cm in kinds.get("ConfigMap", []):
    for key, text in cm.get("data", {}).items():
        want = binary_for(key)
        if want not in bins:
            problems.append(f"ConfigMap {key}: no {want} binary to check")
            continue
        check_conf(text, flags[want], f"ConfigMap {key}")

for p in problems:
    print(p)
print(f"checked {len(units)} systemd units and {len(docs)} Kubernetes objects: "
      f"{len(problems)} problem(s)")
sys.exit(1 if problems else 0)
