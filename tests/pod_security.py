"""The restricted Pod Security Standard, as a checker of pod specs.

Written from the Kubernetes page "Pod Security Standards" (concepts/security/pod-security-standards):
every Baseline control and every Restricted one, each as "restricted fields" and "allowed values".
``violations`` returns one line per control a pod breaks (none: the restricted profile admits it).
"""

from __future__ import annotations

from typing import Any

# Baseline "Sysctls": the safe set (the page lists them with the release that added each)
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
# Restricted "Volume Types"
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                   "projected", "secret"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for key in ("containers", "initContainers", "ephemeralContainers") for c in spec.get(key) or []]


def violations(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """What in a pod spec (a template's ``spec``) the restricted profile forbids."""
    out: list[str] = []
    pod_sc = spec.get("securityContext") or {}
    containers = _containers(spec)
    contexts = [("pod", pod_sc)] + [(f"container {c.get('name')}", c.get("securityContext") or {}) for c in containers]

    # --- Baseline ---
    for who, sc in contexts:
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            out.append(f"HostProcess: {who} sets windowsOptions.hostProcess")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"Host Namespaces: {field} is true")
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("privileged"):
            out.append(f"Privileged Containers: container {name} is privileged")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"Host Ports: container {name} uses hostPort {port['hostPort']}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"/proc Mount Type: container {name} sets procMount {sc['procMount']}")
    for vol in spec.get("volumes") or []:
        if "hostPath" in vol:
            out.append(f"HostPath Volumes: volume {vol.get('name')} is a hostPath")
    for who, sc in contexts:
        profile = (sc.get("appArmorProfile") or {}).get("type")
        if profile is not None and profile not in ("RuntimeDefault", "Localhost"):
            out.append(f"AppArmor: {who} sets appArmorProfile {profile}")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            out.append(f"SELinux: {who} sets seLinuxOptions {se}")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and not (
                value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"AppArmor: annotation {key}: {value}")
    for sysctl in pod_sc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"Sysctls: {sysctl.get('name')} is not in the safe set")

    # --- Restricted ---
    for vol in spec.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"Volume Types: volume {vol.get('name')} is {', '.join(sorted(kinds - ALLOWED_VOLUMES))}")
    pod_seccomp = (pod_sc.get("seccompProfile") or {}).get("type")
    if pod_seccomp is not None and pod_seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"Seccomp: the pod sets {pod_seccomp}")
    if pod_sc.get("runAsUser") == 0:
        out.append("Running as Non-root user: the pod sets runAsUser 0")
    for c in containers:
        sc = c.get("securityContext") or {}
        name = c.get("name")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"Privilege Escalation: container {name} does not set allowPrivilegeEscalation false")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"Running as Non-root: neither the pod nor container {name} sets runAsNonRoot true")
        if sc.get("runAsUser") == 0:
            out.append(f"Running as Non-root user: container {name} sets runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"Seccomp: container {name} runs with seccomp {seccomp or 'unset'}")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"Capabilities: container {name} does not drop ALL")
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            out.append(f"Capabilities: container {name} adds {', '.join(sorted(added))}")
    return out
