#!/usr/bin/python
# -*- coding: utf-8 -*-
"""Ansible module: apply a live patch to every process of a binary.

A thin wrapper over `hpctl apply --exe PATH PATCH --persist --json`: hpctl
does the work and reports one JSON object per process (and one per patch
directory it changed); this module turns that into Ansible's changed/failed
and returns the per-process results.
"""

DOCUMENTATION = r"""
module: hotpatch
short_description: Live-patch every running process of a binary (hpctl --exe)
description:
  - Runs C(hpctl apply --exe EXE PATCH --json), by default with C(--persist) so
    processes of this build started later apply the patch before main.
  - A process that has the patch id applied already is left alone, so a second
    run reports C(changed=false).
  - Processes of another build of EXE, or without the loader, are reported as
    skipped and do not fail the task.
options:
  exe:
    description: Path of the executable whose processes to patch.
    required: true
    type: path
  patch:
    description: Path of the patch object (.hpo) on the managed host.
    required: true
    type: path
  persist:
    description: Keep the patch in the build's patch directory (re-applied at start-up).
    type: bool
    default: true
  lazy:
    description: Switch at once instead of waiting for no thread to run the code.
    type: bool
    default: false
  hpctl:
    description: The hpctl binary on the managed host.
    type: path
    default: hpctl
  environment_dir:
    description: HOTPATCH_DIR for hpctl when no process of the build runs (it then
      cannot read the directory from a process's environment).
    type: path
"""

RETURN = r"""
processes:
  description: One entry per process found (hpctl's JSON object; C(status) is ok, failed or skipped).
  type: list
  returned: always
directories:
  description: What happened in each patch directory (C(changed), C(message)).
  type: list
  returned: when persist
"""

import json
import os

from ansible.module_utils.basic import AnsibleModule


def hpctl_command(p):
    cmd = [p["hpctl"], "apply", "--exe", p["exe"], p["patch"], "--json"]
    if p["persist"]:
        cmd.append("--persist")
    if p["lazy"]:
        cmd.append("--lazy")
    return cmd


def parse_lines(out):
    """hpctl prints one JSON object a line; anything else is a bug to report."""
    objects = []
    for line in out.splitlines():
        line = line.strip()
        if line:
            objects.append(json.loads(line))
    return objects


def summarise(objects):
    processes = [o for o in objects if "pid" in o]
    directories = [o for o in objects if o.get("action") in ("persist", "unpersist")]
    changed = any(o.get("changed") for o in processes if o.get("status") == "ok")
    changed = changed or any(d.get("changed") for d in directories)
    return processes, directories, changed


def main():
    module = AnsibleModule(
        argument_spec=dict(
            exe=dict(type="path", required=True),
            patch=dict(type="path", required=True),
            persist=dict(type="bool", default=True),
            lazy=dict(type="bool", default=False),
            hpctl=dict(type="path", default="hpctl"),
            environment_dir=dict(type="path"),
        ),
        supports_check_mode=False,
    )
    p = module.params
    env = None
    if p["environment_dir"]:
        env = {"HOTPATCH_DIR": p["environment_dir"]}
    rc, out, err = module.run_command(hpctl_command(p), environ_update=env)
    try:
        objects = parse_lines(out)
    except ValueError as e:
        module.fail_json(msg="hpctl printed something that is not JSON: %s" % e,
                         rc=rc, stdout=out, stderr=err)
    processes, directories, changed = summarise(objects)
    failed = [o for o in processes if o.get("status") == "failed"]
    result = dict(changed=changed, rc=rc, processes=processes, directories=directories,
                  stderr=err)
    if rc != 0:
        reasons = ["%s: %s" % (o["pid"], o.get("message", "")) for o in failed]
        head = err.strip().splitlines()[-1] if err.strip() else "hpctl exited with %d" % rc
        module.fail_json(msg="; ".join([head] + reasons), **result)
    ok = len([o for o in processes if o.get("status") == "ok"])
    result["msg"] = "%d process(es) patched or already patched, %d skipped" % (
        ok, len(processes) - ok)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
