// Resource implementations of the mailinfra provider. Every operation is one SSH exec;
// check/diff never touch a host, so a no-op `pulumi up` costs no SSH round trip (read() is in ./read.ts).
import { sha256 } from "../lib/hash";
import { Connection, runChecked } from "./ssh";

export const SECRET_SIG = "4dabf18193072939515e22adb298388d";
export const SECRET_VAL = "1b47061264138c4ac30d75fd1eb44270";

export function isSecret(v: any): boolean {
    return !!v && typeof v === "object" && v[SECRET_SIG] === SECRET_VAL;
}

/** Removes Pulumi's secret envelopes (the provider accepts secrets and must see plain values). */
export function unwrapSecrets(v: any): any {
    if (Array.isArray(v)) return v.map(unwrapSecrets);
    if (v && typeof v === "object") {
        if (v[SECRET_SIG] === SECRET_VAL) return unwrapSecrets(v.value);
        return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, unwrapSecrets(x)]));
    }
    return v;
}

/** Single-quotes a value for bash. */
export function shq(s: string): string {
    return `'${s.replace(/'/g, `'\\''`)}'`;
}


export interface CheckFailure {
    property: string;
    reason: string;
}

export interface ResourceKind {
    check(news: any): CheckFailure[];
    /** Properties whose change forces a replacement (new resource, then delete of the old). */
    replaceOn: string[];
    create(p: any): Promise<Record<string, unknown>>;
    update(olds: any, p: any): Promise<Record<string, unknown>>;
    delete(p: any): Promise<void>;
}

const NAME_RE = /^[a-z_][a-z0-9_.-]*\$?$/i;
const MODE_RE = /^0?[0-7]{3,4}$/;

function checkConnection(news: any): CheckFailure[] {
    const c = news.connection;
    if (!c || typeof c.host !== "string" || c.host === "") return [{ property: "connection.host", reason: "a host address is required" }];
    return [];
}

// ---------------------------------------------------------------------------------------------
// mailinfra:host:File — a file with owner/mode, checked on the host before it goes live.
// ---------------------------------------------------------------------------------------------
export interface FileProps {
    connection: Connection;
    path: string;
    content: string;
    mode: string;
    owner: string;
    group: string;
    /** Shell command that must succeed for the new file; the staged file is "$NEW". */
    validate?: string;
    /** Leave the file in place when the resource is deleted (package-owned files). */
    keepOnDelete?: boolean;
}

export function fileWriteScript(p: FileProps): string {
    const dir = p.path.replace(/\/[^/]+$/, "") || "/";
    const lines = [
        `target=${shq(p.path)}`,
        `mkdir -p ${shq(dir)}`,
        `umask 077`,
        // staged in the target directory so the final rename is atomic
        `tmp=$(mktemp ${shq(dir)}/.mailinfra-new.XXXXXX)`,
        `trap 'rm -f "$tmp"' EXIT`,
        // stdin is the content the provider already checked (length and sha256) before this script started
        `cat > "$tmp"`,
        `if [ "$(stat -c %s "$tmp")" -ne ${Buffer.byteLength(p.content, "utf8")} ]; then echo "new $target is incomplete: the current one was left in place" >&2; exit 66; fi`,
        `chown ${shq(p.owner)}:${shq(p.group)} "$tmp"`,
        `chmod ${shq(p.mode)} "$tmp"`,
    ];
    if (p.validate) {
        lines.push(
            `if ! out=$(NEW="$tmp" bash -c ${shq(p.validate)} 2>&1); then`,
            `  echo "check of new $target failed: ${p.validate.replace(/["$`\\]/g, "\\$&")}" >&2`,
            `  echo "$out" | sed "s|$tmp|$target (new)|g" | tail -n 40 >&2`,
            `  echo "the current $target was left in place" >&2`,
            `  exit 65`,
            `fi`,
        );
    }
    lines.push(`mv -f "$tmp" "$target"`, `trap - EXIT`);
    return lines.join("\n") + "\n";
}

export const fileKind: ResourceKind = {
    replaceOn: ["path"],
    check(news: FileProps) {
        const f = checkConnection(news);
        if (typeof news.path !== "string" || !news.path.startsWith("/") || news.path.includes(".."))
            f.push({ property: "path", reason: `must be an absolute path without "..", got ${JSON.stringify(news.path)}` });
        if (typeof news.content !== "string") f.push({ property: "content", reason: "must be a string" });
        if (!MODE_RE.test(news.mode ?? "")) f.push({ property: "mode", reason: `must be an octal mode like 0644, got ${JSON.stringify(news.mode)}` });
        for (const k of ["owner", "group"] as const)
            if (!NAME_RE.test(news[k] ?? "")) f.push({ property: k, reason: `must be a user/group name, got ${JSON.stringify(news[k])}` });
        return f;
    },
    async create(p: FileProps) {
        await runChecked(p.connection, `writing ${p.path}`, fileWriteScript(p), p.content);
        return { sha256: sha256(p.content) };
    },
    async update(_olds: FileProps, p: FileProps) {
        return fileKind.create(p);
    },
    async delete(p: FileProps) {
        if (p.keepOnDelete) return;
        await runChecked(p.connection, `removing ${p.path}`, `rm -f ${shq(p.path)}\n`);
    },
};

// ---------------------------------------------------------------------------------------------
// mailinfra:host:Packages — Debian packages, installed non-interactively and conffile-safe.
// ---------------------------------------------------------------------------------------------
export interface PackagesProps {
    connection: Connection;
    packages: string[];
    /** debconf selections (debconf-set-selections format), applied before installing. */
    debconf?: string;
}

const PKG_RE = /^[a-z0-9][a-z0-9+.-]+(\/[a-z0-9-]+)?$/;

export function packagesScript(p: PackagesProps): string {
    const pkgs = p.packages.map(shq).join(" ");
    return [
        `export DEBIAN_FRONTEND=noninteractive`,
        // a mirror or proxy can hang a download forever: bound each try and retry
        `apt_opts="-o Acquire::http::Timeout=30 -o Acquire::Retries=3"`,
        `refresh() { for try in 1 2 3; do timeout 60 apt-get $apt_opts update -q >/dev/null && return 0; echo "apt-get update try $try failed" >&2; sleep 2; done; return 1; }`,
        // refresh indexes when older than 6 h (or never fetched)
        `if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -360 2>/dev/null | head -n1)" ]; then refresh; fi`,
        p.debconf ? `debconf-set-selections <<'MAILINFRA_DEBCONF'\n${p.debconf}\nMAILINFRA_DEBCONF` : ``,
        `install() { timeout 1200 apt-get $apt_opts install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold ${pkgs} 2>&1 | grep -vE '^(Reading|Building|Selecting|Preparing|Unpacking|Setting up|Processing|\\(Reading)' || true; }`,
        // an interrupted earlier run may have left dpkg half-configured
        `dpkg --configure -a >/dev/null 2>&1 || true`,
        `install`,
        // apt's exit code is lost in the pipe above: verify every package is installed
        `missing=$(for p in ${pkgs}; do p=\${p%%/*}; dpkg-query -W -f='\${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || echo "$p"; done)`,
        `if [ -n "$missing" ]; then echo "packages not installed: $missing" >&2; exit 1; fi`,
    ]
        .filter(Boolean)
        .join("\n") + "\n";
}

export const packagesKind: ResourceKind = {
    replaceOn: [],
    check(news: PackagesProps) {
        const f = checkConnection(news);
        if (!Array.isArray(news.packages) || news.packages.length === 0) f.push({ property: "packages", reason: "must be a non-empty list" });
        else for (const p of news.packages) if (!PKG_RE.test(p)) f.push({ property: "packages", reason: `not a Debian package name: ${JSON.stringify(p)}` });
        return f;
    },
    async create(p: PackagesProps) {
        await runChecked(p.connection, `installing packages`, packagesScript(p));
        return {};
    },
    async update(_olds: PackagesProps, p: PackagesProps) {
        return packagesKind.create(p);
    },
    // Removing a package from the list leaves it installed: purging a mail daemon is never implicit.
    async delete() {},
};

// ---------------------------------------------------------------------------------------------
// mailinfra:host:Script — an idempotent bash step (users, directories, mounts, service reloads).
// ---------------------------------------------------------------------------------------------
export interface ScriptProps {
    connection: Connection;
    create: string;
    update?: string;
    delete?: string;
    /** Any values whose change should re-run `update` (e.g. hashes of the files a service reads). */
    triggers?: unknown[];
    /** Secret input handed to the script on stdin (never on a command line). */
    stdin?: string;
    /** Read-only check run by refresh: a non-zero exit shows the resource as drifted and `up` re-runs it. */
    probe?: string;
}

export const scriptKind: ResourceKind = {
    replaceOn: [],
    check(news: ScriptProps) {
        const f = checkConnection(news);
        if (typeof news.create !== "string" || news.create.trim() === "") f.push({ property: "create", reason: "a create script is required" });
        return f;
    },
    async create(p: ScriptProps) {
        const r = await runChecked(p.connection, "running the script", p.create, p.stdin);
        return { stdout: r.stdout.slice(0, 4000) };
    },
    async update(_olds: ScriptProps, p: ScriptProps) {
        const r = await runChecked(p.connection, "running the script", p.update ?? p.create, p.stdin);
        return { stdout: r.stdout.slice(0, 4000) };
    },
    async delete(p: ScriptProps) {
        if (p.delete) await runChecked(p.connection, "running the delete script", p.delete, p.stdin);
    },
};

export const kinds: Record<string, ResourceKind> = {
    "mailinfra:host:File": fileKind,
    "mailinfra:host:Packages": packagesKind,
    "mailinfra:host:Script": scriptKind,
};
