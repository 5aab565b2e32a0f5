// The pure description of one host: what the Pulumi components turn into resources.
// Planners (lib/roles/*) build these from stack config; nothing here talks to a host.
import * as path from "path";
import * as ejs from "ejs";

export interface FileSpec {
    path: string;
    content: string;
    mode: string;
    owner: string;
    group: string;
    /** Checked on the host before the file goes live; "$NEW" is the staged file. */
    validate?: string;
    /** Content is a secret (key, password): rendered into a Pulumi secret, masked in previews. */
    secret?: boolean;
    /** Content built from named stack secrets (resolved as a Pulumi secret, never in the pure plan). */
    fromSecrets?: { names: SecretName[]; render: (secrets: Record<string, string>) => string };
    /** Other managed files of the same host that must be in place first (e.g. an .include'd file). */
    requires?: string[];
    /** Services reloaded when this file changes. */
    notify?: string[];
    keepOnDelete?: boolean;
}

/** Every secret a rendered host file may need (stack config key mailinfra:<name>). */
export const SECRET_NAMES = ["smokePassword", "ldapPassword", "otrsDbPassword", "userdbSyncKey", "tlsPrivateKey", "bayesLearnKey", "backupKey", "mailmanWebSecret"] as const;
export type SecretName = (typeof SECRET_NAMES)[number];

export interface UserSpec {
    name: string;
    home: string;
    /** Primary group (default: a group of the user's name). */
    group?: string;
    /** Created with a home directory (for users that own ~/.ssh). */
    createHome?: boolean;
    /** Supplementary groups (e.g. Debian-exim in vmail). */
    groups?: string[];
    system: true;
}

export interface GroupMembership {
    user: string;
    group: string;
}

export interface DirectorySpec {
    path: string;
    mode: string;
    owner: string;
    group: string;
}

export interface TmpfsMountSpec {
    path: string;
    /** Owner of the mount's root; resolved to numeric ids on the host for fstab. */
    owner: string;
    group: string;
    mode: string;
    size: string;
}

export interface CronSpec {
    /** File name under /etc/cron.d. */
    name: string;
    schedule: string;
    user: string;
    command: string;
}

/** The /etc/cron.d file of a cron entry (what MailHost deploys; the drift audit compares against it). */
export function cronFile(c: CronSpec): FileSpec {
    return {
        path: `/etc/cron.d/${c.name}`,
        content: `# rendered by mailinfra\nSHELL=/bin/sh\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n${c.schedule} ${c.user} ${c.command}\n`,
        mode: "0644",
        owner: "root",
        group: "root",
        keepOnDelete: false,
    };
}

export interface ServiceSpec {
    name: string;
    /** systemctl action when a notifying file changed. */
    onChange: "reload" | "restart" | "reload-or-restart";
}

/** An idempotent step that does not fit the primitives (schema migration, account upsert). */
export interface StepSpec {
    name: string;
    script: string;
    /** Secret handed to the script on stdin. */
    secretStdin?: SecretName;
    /** "peers": the hosts this one talks to (e.g. the relay receiving the account DB) are converged. */
    after: ("packages" | "users" | "directories" | "files" | "peers")[];
}

/** A TCP port a part serves and who may reach it: the host's firewall opens exactly these (lib/parts/firewall.ts). */
export interface PortSpec {
    port: number;
    /** "all", "adminNetworks" (mailinfra:ssh.adminNetworks), or the addresses/networks (CIDR or single address) allowed in. */
    from: "all" | "adminNetworks" | string[];
    /** What is served and why these sources, e.g. "smtp from the relays" (a comment in the rule set). */
    service: string;
}

export interface HostPlan {
    host: string;
    role: string;
    packages: string[];
    debconf?: string;
    users: UserSpec[];
    groupMemberships: GroupMembership[];
    directories: DirectorySpec[];
    mounts: TmpfsMountSpec[];
    files: FileSpec[];
    cron: CronSpec[];
    services: ServiceSpec[];
    steps: StepSpec[];
    /** Inbound TCP ports the host's services need open; everything else is dropped. */
    ports: PortSpec[];
}

export function emptyPlan(host: string, role: string): HostPlan {
    return { host, role, packages: [], users: [], groupMemberships: [], directories: [], mounts: [], files: [], cron: [], services: [], steps: [], ports: [] };
}

/** Merges plan parts (Exim core, Dovecot, ...) into one host plan; a path may be owned by one part only. */
export function mergePlans(base: HostPlan, ...parts: Partial<HostPlan>[]): HostPlan {
    const out: HostPlan = structuredClone(base);
    for (const p of parts) {
        out.packages.push(...(p.packages ?? []));
        out.users.push(...(p.users ?? []));
        out.groupMemberships.push(...(p.groupMemberships ?? []));
        out.directories.push(...(p.directories ?? []));
        out.mounts.push(...(p.mounts ?? []));
        out.files.push(...(p.files ?? []));
        out.cron.push(...(p.cron ?? []));
        out.services.push(...(p.services ?? []));
        out.steps.push(...(p.steps ?? []));
        out.ports.push(...(p.ports ?? []));
        if (p.debconf) out.debconf = [out.debconf, p.debconf].filter(Boolean).join("\n");
    }
    out.packages = [...new Set(out.packages)].sort();
    const seen = new Set<string>();
    for (const f of [...out.files.map((f) => f.path), ...out.directories.map((d) => d.path)]) {
        if (seen.has(f)) throw new Error(`plan for ${base.host}: ${f} is managed twice`);
        seen.add(f);
    }
    return out;
}

export const FILES_DIR = path.resolve(__dirname, "..", "files");

/** Renders files/<template> with ejs; templates include shared partials by relative path. */
export function render(template: string, data: Record<string, unknown>): string {
    const file = path.join(FILES_DIR, template);
    return ejs.render(require("fs").readFileSync(file, "utf8"), data, { filename: file, strict: false, rmWhitespace: false });
}

/** A root-owned bash script under /usr/local/sbin rendered from a template, syntax-checked before it goes live. */
export function scriptFile(path: string, template: string, data: Record<string, unknown>): FileSpec {
    return { path, content: render(template, data), mode: "0755", owner: "root", group: "root", validate: `bash -n "$NEW"` };
}

/** Exim list syntax with a safe separator when items may contain ':' (IPv6). */
export function eximList(items: string[]): string {
    if (items.length === 0) return "";
    return items.some((i) => i.includes(":")) ? `<; ${items.join(" ; ")}` : items.join(" : ");
}
