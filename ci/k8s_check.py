#!/usr/bin/env python3
"""Offline check of the Kubernetes manifests in ci/k8s/: every document parses, every field
exists where it is written (against the models of the official Kubernetes Python client,
when it is installed), and what the sharded run relies on holds: an Indexed Job whose pods
read JOB_COMPLETION_INDEX, completions equal to parallelism and to APEX_SHARDS, a restart
policy a Job accepts, every volumeMount backed by a volume, every claim and ConfigMap defined
beside it, and the merge reading the directory the shards write.

Without a cluster it cannot check admission (defaults, quotas, feature gates of a given
Kubernetes version), that the image exists, or that the storage class offers ReadWriteMany.
"""

import glob
import re
import sys

import yaml

try:
    import kubernetes.client as k8s
except ImportError:  # the fields are then checked by the rules below only
    k8s = None

MODELS = {("batch/v1", "Job"): "V1Job", ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
          ("v1", "ConfigMap"): "V1ConfigMap"}
errors = []


def fail(where, message):
    errors.append(f"{where}: {message}")


def check_fields(value, type_name, path):
    """Every key of `value` must be a field of the client model `type_name`, recursively."""
    if value is None:
        return
    list_of = re.fullmatch(r"[lL]ist\[(.+)\]", type_name)
    dict_of = re.fullmatch(r"dict\(str, (.+)\)|Dict\[str, (.+)\]", type_name)
    if list_of:
        if not isinstance(value, list):
            return fail(path, f"expected a list ({type_name})")
        for i, item in enumerate(value):
            check_fields(item, list_of.group(1), f"{path}[{i}]")
        return
    if dict_of:
        if not isinstance(value, dict):
            return fail(path, f"expected a map ({type_name})")
        for key, item in value.items():
            check_fields(item, dict_of.group(1) or dict_of.group(2), f"{path}.{key}")
        return
    model = getattr(k8s, type_name, None)
    if model is None:  # a scalar (str, int, bool, object, datetime)
        scalar = {"str": str, "int": int, "bool": bool}.get(type_name)
        if scalar and not isinstance(value, scalar):
            fail(path, f"expected {type_name}, found {type(value).__name__}")
        return
    if not isinstance(value, dict):
        return fail(path, f"expected an object ({type_name})")
    by_json = {json: attr for attr, json in model.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json:
            fail(f"{path}.{key}", f"no such field in {type_name}")
        else:
            check_fields(item, model.openapi_types[by_json[key]], f"{path}.{key}")


def pod_of(job):
    return (((job.get("spec") or {}).get("template") or {}).get("spec")) or {}


def check_pod(where, pod, defined):
    if pod.get("restartPolicy") not in ("Never", "OnFailure"):
        fail(where, "a Job's pods need restartPolicy Never or OnFailure")
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    for volume in volumes.values():
        claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
        if claim and ("PersistentVolumeClaim", claim) not in defined:
            fail(where, f"volume {volume.get('name')}: claim {claim} is not defined in ci/k8s/")
    mounts = {}
    for container in pod.get("containers") or []:
        for mount in container.get("volumeMounts") or []:
            if mount.get("name") not in volumes:
                fail(where, f"volumeMount {mount.get('name')} has no volume")
            mounts[mount.get("mountPath")] = mount.get("name")
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
            if ref and ("ConfigMap", ref.get("name")) not in defined:
                fail(where, f"env {env.get('name')}: ConfigMap {ref.get('name')} is not defined")
    return mounts


def script_of(pod):
    return "\n".join(" ".join(c.get("command") or []) + " " + " ".join(c.get("args") or [])
                     for c in pod.get("containers") or [])


def check_shards(where, job):
    spec, pod = job.get("spec") or {}, pod_of(job)
    if spec.get("completionMode") != "Indexed":
        fail(where, "the shards need completionMode: Indexed (the completion index is the shard)")
    if spec.get("completions") != spec.get("parallelism"):
        fail(where, "completions and parallelism differ: shards would not run at once")
    script = script_of(pod)
    if "JOB_COMPLETION_INDEX" not in script or "--shard" not in script or "--seed" not in script:
        fail(where, "the shard command must use JOB_COMPLETION_INDEX, --shard and --seed")
    shards = [e.get("value") for c in pod.get("containers") or [] for e in c.get("env") or []
              if e.get("name") == "APEX_SHARDS"]
    if shards != [str(spec.get("completions"))]:
        fail(where, f"APEX_SHARDS {shards} must be completions ({spec.get('completions')})")


def main():
    documents = []
    for path in sorted(glob.glob("ci/k8s/*.yaml")):
        with open(path, encoding="utf-8") as f:
            for i, doc in enumerate(yaml.safe_load_all(f)):
                if doc is not None:
                    documents.append((f"{path}#{i + 1}", doc))
    defined = {(d.get("kind"), (d.get("metadata") or {}).get("name")) for _, d in documents}
    jobs = {}
    for where, doc in documents:
        model = MODELS.get((doc.get("apiVersion"), doc.get("kind")))
        if model is None:
            fail(where, f"unexpected {doc.get('apiVersion')} {doc.get('kind')}")
            continue
        if k8s is not None:
            check_fields(doc, model, doc.get("kind"))
        if doc.get("kind") == "Job":
            jobs[(doc.get("metadata") or {}).get("name")] = (where, doc)
    if set(jobs) != {"apex-shards", "apex-merge"}:
        fail("ci/k8s", f"expected the Jobs apex-shards and apex-merge, found {sorted(jobs)}")
    mounts = {name: check_pod(where, pod_of(job), defined) for name, (where, job) in jobs.items()}
    if "apex-shards" in jobs:
        check_shards(*jobs["apex-shards"])
    if "apex-merge" in jobs:
        where, merge = jobs["apex-merge"]
        if "apex-harness merge /reports/" not in script_of(pod_of(merge)):
            fail(where, "the merge must read the shards' reports from /reports")
        for name in ("apex-shards", "apex-merge"):
            if "/reports" not in mounts.get(name, {}):
                fail(jobs[name][0] if name in jobs else name, "no volume mounted at /reports")
    fields = "fields checked against the Kubernetes client's models" if k8s else \
        "fields NOT checked (kubernetes client missing)"
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    print(f"ci/k8s: {len(documents)} documents, {fields}, {len(errors)} errors")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
