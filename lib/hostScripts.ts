// The idempotent bash steps for a host's users, groups, directories, mounts and services, each with its
// read-only probe: exit 0 when the item is in place, otherwise one line saying what differs. MailHost deploys
// them as Script resources (refresh runs the probe; a failing probe re-runs `create`), and the drift audit
// runs the same probes, so both report the same items.
import { DirectorySpec, GroupMembership, ServiceSpec, TmpfsMountSpec, UserSpec } from "./plan";
import { shq as q } from "./shell";


export interface HostScript {
    /** What the drift audit calls it: "<kind> <name>". */
    kind: "user" | "group" | "directory" | "mount" | "service";
    name: string;
    create: string;
    delete?: string;
    probe: string;
}

/** "0750" → "750", as `stat -c %a` prints it. */
const statMode = (mode: string) => parseInt(mode, 8).toString(8);

export function userScript(u: UserSpec): HostScript {
    return {
        kind: "user",
        name: u.name,
        create: `id -u ${q(u.name)} >/dev/null 2>&1 || adduser --quiet --system --home ${q(u.home)} ${u.createHome ? "" : "--no-create-home"} ${u.group ? `--ingroup ${q(u.group)}` : "--group"} --shell ${u.createHome ? "/bin/sh" : "/usr/sbin/nologin"} --disabled-password ${q(u.name)}`,
        probe: `id -u ${q(u.name)} >/dev/null 2>&1 || { echo "missing"; exit 1; }`,
    };
}

export function membershipScript(m: GroupMembership): HostScript {
    const isMember = `id -nG ${q(m.user)} 2>/dev/null | tr ' ' '\\n' | grep -qx ${q(m.group)}`;
    return {
        kind: "group",
        name: `${m.group}:${m.user}`,
        create: `${isMember} || adduser --quiet ${q(m.user)} ${q(m.group)}`,
        delete: `deluser --quiet ${q(m.user)} ${q(m.group)} || true`,
        probe: `${isMember} || { echo "${m.user} is not in group ${m.group}"; exit 1; }`,
    };
}

export function directoryScript(d: DirectorySpec): HostScript {
    const want = `${d.owner} ${d.group} ${statMode(d.mode)}`;
    return {
        kind: "directory",
        name: d.path,
        create: `install -d -m ${q(d.mode)} -o ${q(d.owner)} -g ${q(d.group)} ${q(d.path)}`,
        probe: [
            `[ -d ${q(d.path)} ] || { echo missing; exit 1; }`,
            `have=$(stat -c '%U %G %a' ${q(d.path)})`,
            `[ "$have" = ${q(want)} ] || { echo "owner/mode $have, expected ${want}"; exit 1; }`,
        ].join("\n"),
    };
}

export function mountScript(m: TmpfsMountSpec): HostScript {
    const fstabMatch = `^tmpfs[[:space:]]+${m.path}[[:space:]]`;
    // the fstab line, with the owner's numeric ids resolved on the host
    const line = `line="tmpfs ${m.path} tmpfs size=${m.size},mode=${m.mode},uid=$(id -u ${q(m.owner)}),gid=$(getent group ${q(m.group)} | cut -d: -f3),nodev,nosuid 0 0"`;
    return {
        kind: "mount",
        name: m.path,
        create: [
            `install -d ${q(m.path)}`,
            line,
            `grep -vE ${q(fstabMatch)} /etc/fstab > /etc/fstab.mailinfra || true`,
            `echo "$line" >> /etc/fstab.mailinfra && mv /etc/fstab.mailinfra /etc/fstab`,
            `if mountpoint -q ${q(m.path)}; then mount -o remount ${q(m.path)}; else mount ${q(m.path)}; fi`,
        ].join("\n"),
        delete: `umount ${q(m.path)} || true\nsed -i -E ${q(`\|${fstabMatch}|d`)} /etc/fstab`,
        probe: [
            `${line} || { echo "owner ${m.owner}:${m.group} missing"; exit 1; }`,
            `grep -qxF "$line" /etc/fstab || { echo "not in /etc/fstab as declared"; exit 1; }`,
            `mountpoint -q ${q(m.path)} || { echo "not mounted"; exit 1; }`,
        ].join("\n"),
    };
}

/** Unit states that count as enabled (a static or generated unit cannot be enabled by hand). */
const ENABLED_STATES = ["enabled", "static", "alias", "indirect", "generated"];

/**
 * A managed service: enabled, running, and reloaded after any file it reads changed. `reads` are the
 * declared "path=sha256" of those files: when one is not in place on the host (hand-edited, deleted), the probe
 * fails, so the refresh that repairs the file also reloads the service that reads it.
 */
export function serviceScript(svc: ServiceSpec, reads: string[] = []): HostScript {
    const n = q(svc.name);
    return {
        kind: "service",
        name: svc.name,
        // a stopped service cannot be reloaded: start it instead
        create: [`systemctl daemon-reload`, `systemctl enable --quiet ${n}`, `if systemctl is-active --quiet ${n}; then systemctl ${svc.onChange} ${n}; else systemctl start ${n}; fi`, `systemctl is-active --quiet ${n}`].join("\n"),
        probe: [
            `active=$(systemctl is-active ${n} 2>/dev/null || true)`,
            `enabled=$(systemctl is-enabled ${n} 2>/dev/null || true)`,
            `case " ${ENABLED_STATES.join(" ")} " in *" $enabled "*) e=1;; *) e=0;; esac`,
            `if [ "$active" != active ] || [ $e = 0 ]; then echo "\${active:-unknown}, \${enabled:-unknown} (expected active, enabled)"; exit 1; fi`,
            ...(reads.length ? [filesInPlaceProbe(reads, "reads", "reloaded after the repair")] : []),
        ].join("\n"),
    };
}

/** Fails, naming them, when any of the files ("path=sha256") is missing or differs from its declared hash. */
export function filesInPlaceProbe(files: string[], verb = "depends on", then = "re-run after the repair"): string {
    const sums = files.map((r) => {
        const i = r.lastIndexOf("=");
        return `${r.slice(i + 1)}  ${r.slice(0, i)}`;
    });
    return [
        `stale=$(sha256sum --check --quiet 2>/dev/null <<'MAILINFRA_SUMS' | sed -n 's/: FAILED.*$//p' | paste -sd' ' || true`,
        ...sums,
        `MAILINFRA_SUMS`,
        `)`,
        `[ -z "$stale" ] || { echo "${verb} $stale, not as declared (${then})"; exit 1; }`,
    ].join("\n");
}
