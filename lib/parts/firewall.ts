// Every host's inbound firewall (nftables, IPv4 and IPv6), derived from the ports its plan's parts declare
// (HostPlan.ports): a part that serves a port says so next to the daemon, with who may reach it.
// Everything else inbound is dropped. The rule set is checked on the host before it goes live, and
// refused if it would drop SSH from the machine applying it.
import { hostsWithRole, Role, StackConfig } from "../config";
import { FileSpec, HostPlan, PortSpec, render, scriptFile } from "../plan";

export const NFTABLES_CONF = "/etc/nftables.conf";
export const FIREWALL_TABLE = "mailinfra";
export const FIREWALL_CHECK = "/usr/local/sbin/mailinfra-firewall-check";

/** The addresses of the hosts with these roles (firewall and ACL sources). */
export function addressesOf(cfg: StackConfig, ...roles: Role[]): string[] {
    return roles.flatMap((r) => hostsWithRole(cfg, r).map(([, h]) => h.address));
}

/** SSH for the operators (mailinfra:ssh.adminNetworks): every host. */
export function adminSshPort(cfg: StackConfig): PortSpec {
    return { port: cfg.ssh.port, from: "adminNetworks", service: "ssh from mailinfra:ssh.adminNetworks" };
}

/** SSH from the IMAP store, for a forced-command key it uses on this host (account push, Bayes, backups). */
export function sshFromStore(cfg: StackConfig, what: string): PortSpec {
    return { port: cfg.ssh.port, from: addressesOf(cfg, "imap"), service: `ssh from the store: ${what}` };
}

const isV6 = (a: string) => a.includes(":");
const comment = (s: string) => `comment "${s.replace(/["\\]/g, "").slice(0, 120)}"`;

/** One nft rule line per family for a declared port. */
export function portRules(p: PortSpec): string[] {
    if (p.from === "all") return [`tcp dport ${p.port} accept ${comment(p.service)}`];
    if (p.from === "adminNetworks")
        return [`tcp dport ${p.port} ip saddr @admin_v4 accept ${comment(p.service)}`, `tcp dport ${p.port} ip6 saddr @admin_v6 accept ${comment(p.service)}`];
    const v4 = [...new Set(p.from.filter((a) => !isV6(a)))];
    const v6 = [...new Set(p.from.filter(isV6))];
    return [
        ...(v4.length ? [`tcp dport ${p.port} ip saddr { ${v4.join(", ")} } accept ${comment(p.service)}`] : []),
        ...(v6.length ? [`tcp dport ${p.port} ip6 saddr { ${v6.join(", ")} } accept ${comment(p.service)}`] : []),
    ];
}

/** The rule set of one host: its plan's ports sorted by port, one rule per port and sources (services joined). */
export function renderRuleset(cfg: StackConfig, plan: Pick<HostPlan, "host" | "role" | "ports">): string {
    const merged = new Map<string, PortSpec>();
    for (const p of [...plan.ports].sort((a, b) => a.port - b.port)) {
        const key = `${p.port} ${JSON.stringify(p.from)}`;
        const seen = merged.get(key);
        merged.set(key, seen ? { ...seen, service: seen.service.split(", ").includes(p.service) ? seen.service : `${seen.service}, ${p.service}` } : p);
    }
    const rules = [...merged.values()].flatMap(portRules);
    const admin = { v4: cfg.ssh.adminNetworks.filter((n) => !isV6(n)), v6: cfg.ssh.adminNetworks.filter(isV6) };
    return render("shared/etc/nftables.conf.ejs", { host: plan.host, role: plan.role, admin, rules });
}

/** nftables from Debian on every host, its rule set from the plan, checked before it goes live. */
export function withFirewall(cfg: StackConfig, plan: HostPlan): HostPlan {
    const ports = [adminSshPort(cfg), ...plan.ports];
    const checker = scriptFile(FIREWALL_CHECK, "shared/usr/local/sbin/mailinfra-firewall-check.ejs", { conf: NFTABLES_CONF, table: FIREWALL_TABLE, adminNetworks: cfg.ssh.adminNetworks });
    const rules: FileSpec = {
        path: NFTABLES_CONF,
        content: renderRuleset(cfg, { ...plan, ports }),
        mode: "0755",
        owner: "root",
        group: "root",
        validate: `${FIREWALL_CHECK} "$NEW"`,
        requires: [FIREWALL_CHECK],
        notify: ["nftables"],
        // a host leaving the stack keeps its firewall (without the file, nftables.service fails at boot: no rules)
        keepOnDelete: true,
    };
    for (const f of [checker, rules])
        if (plan.files.some((g) => g.path === f.path)) throw new Error(`plan for ${plan.host}: ${f.path} is managed twice (firewall)`);
    return {
        ...plan,
        packages: [...new Set([...plan.packages, "nftables"])].sort(),
        files: [...plan.files, checker, rules],
        // start, or reload (nft -f is atomic: established connections and the old rules until the swap)
        services: [...plan.services, { name: "nftables", onChange: "reload-or-restart" }],
        ports,
    };
}
