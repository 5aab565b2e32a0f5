// Drift audit: what a host should have (the same HostPlans the program deploys) against what it has.
// Pure: scripts/drift.ts observes hosts; this renders the expectation and judges the observation.
// Files rendered from secrets are compared by hash only, never printed.
import { sha256 } from "./hash";
import { cronFile, HostPlan, SecretName } from "./plan";

export interface ExpectedFile {
    path: string;
    mode: string;
    owner: string;
    group: string;
    sha256: string;
    /** Absent for secret files: their content never leaves this process. */
    content?: string;
    secret: boolean;
}

export interface ExpectedHost {
    host: string;
    files: ExpectedFile[];
    directories: { path: string; mode: string; owner: string; group: string }[];
    packages: string[];
    services: string[];
}

/** Every managed file (plan files + cron files) with its expected hash; secret files rendered only to hash them. */
export function expectedHost(plan: HostPlan, secrets: Partial<Record<SecretName, string>>): ExpectedHost {
    const files: ExpectedFile[] = [...plan.files, ...plan.cron.map(cronFile)].map((f) => {
        const secret = !!(f.secret || f.fromSecrets);
        let content = f.content;
        if (f.fromSecrets) {
            const missing = f.fromSecrets.names.filter((n) => secrets[n] === undefined);
            if (missing.length) throw new Error(`${plan.host}: ${f.path} needs the secret(s) ${missing.map((m) => `mailinfra:${m}`).join(", ")}`);
            content = f.fromSecrets.render(secrets as Record<string, string>);
        }
        return { path: f.path, mode: f.mode, owner: f.owner, group: f.group, sha256: sha256(content), content: secret ? undefined : content, secret };
    });
    return { host: plan.host, files, directories: plan.directories, packages: plan.packages, services: plan.services.map((s) => s.name) };
}

/** The SSH script that observes one host: one line per item, "kind<TAB>name<TAB>values...". */
export function observeScript(e: ExpectedHost): string {
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    const lines = [
        `f() { if [ -e "$1" ]; then printf 'file\\t%s\\t%s\\t%s\\n' "$1" "$(stat -c '%U %G %a' "$1")" "$(sha256sum < "$1" | cut -d' ' -f1)"; else printf 'file\\t%s\\tmissing\\n' "$1"; fi; }`,
        `d() { if [ -d "$1" ]; then printf 'dir\\t%s\\t%s\\n' "$1" "$(stat -c '%U %G %a' "$1")"; else printf 'dir\\t%s\\tmissing\\n' "$1"; fi; }`,
        ...e.files.map((f) => `f ${q(f.path)}`),
        ...e.directories.map((d) => `d ${q(d.path)}`),
        `for p in ${e.packages.map(q).join(" ")}; do printf 'pkg\\t%s\\t%s\\n' "$p" "$(dpkg-query -W -f='\${db:Status-Abbrev}' "$p" 2>/dev/null | tr -d ' ' || true)"; done`,
        ...e.services.map((s) => `printf 'svc\\t%s\\t%s %s\\n' ${q(s)} "$(systemctl is-active ${q(s)} 2>/dev/null || true)" "$(systemctl is-enabled ${q(s)} 2>/dev/null || true)"`),
    ];
    return lines.join("\n") + "\n";
}

export interface Observed {
    files: Record<string, { meta?: string; sha256?: string }>;
    dirs: Record<string, string | undefined>;
    packages: Record<string, string>;
    services: Record<string, string>;
}

export function parseObservation(stdout: string): Observed {
    const o: Observed = { files: {}, dirs: {}, packages: {}, services: {} };
    for (const line of stdout.split("\n")) {
        const [kind, name, a, b] = line.split("\t");
        if (kind === "file") o.files[name] = a === "missing" ? {} : { meta: a, sha256: b };
        else if (kind === "dir") o.dirs[name] = a === "missing" ? undefined : a;
        else if (kind === "pkg") o.packages[name] = a ?? "";
        else if (kind === "svc") o.services[name] = a ?? "";
    }
    return o;
}

export interface DriftItem {
    kind: "file" | "directory" | "package" | "service";
    name: string;
    /** One line: what differs. */
    what: string;
    /** A file whose content differs and may be shown (not secret). */
    contentDiffers?: boolean;
}

const modeOf = (m: string) => parseInt(m, 8);

function metaDrift(expected: { mode: string; owner: string; group: string }, meta: string): string[] {
    const [owner, group, mode] = meta.split(" ");
    const out: string[] = [];
    if (owner !== expected.owner || group !== expected.group) out.push(`owner ${owner}:${group}, expected ${expected.owner}:${expected.group}`);
    if (modeOf(mode) !== modeOf(expected.mode)) out.push(`mode ${mode.padStart(4, "0")}, expected ${expected.mode}`);
    return out;
}

export function compareHost(e: ExpectedHost, o: Observed): DriftItem[] {
    const out: DriftItem[] = [];
    for (const f of e.files) {
        const seen = o.files[f.path];
        if (!seen || !seen.meta) {
            out.push({ kind: "file", name: f.path, what: "missing" });
            continue;
        }
        const problems = metaDrift(f, seen.meta);
        const contentDiffers = seen.sha256 !== f.sha256;
        if (contentDiffers) problems.unshift(f.secret ? "content differs (secret: compared by hash only)" : "content differs");
        if (problems.length) out.push({ kind: "file", name: f.path, what: problems.join("; "), contentDiffers: contentDiffers && !f.secret });
    }
    for (const d of e.directories) {
        const meta = o.dirs[d.path];
        if (!meta) out.push({ kind: "directory", name: d.path, what: "missing" });
        else {
            const p = metaDrift(d, meta);
            if (p.length) out.push({ kind: "directory", name: d.path, what: p.join("; ") });
        }
    }
    for (const p of e.packages) if (o.packages[p] !== "ii") out.push({ kind: "package", name: p, what: o.packages[p] && o.packages[p] !== "un" ? `dpkg state ${o.packages[p]}` : "not installed" });
    for (const s of e.services) {
        const [active, enabled] = (o.services[s] ?? "").split(" ");
        if (active !== "active" || !["enabled", "static", "alias", "indirect"].includes(enabled ?? ""))
            out.push({ kind: "service", name: s, what: `${active || "unknown"}, ${enabled || "unknown"} (expected active, enabled)` });
    }
    return out;
}

export function renderHostReport(host: string, items: DriftItem[], diffs: Record<string, string>): string {
    if (!items.length) return `== ${host}: no drift`;
    const lines = [`== ${host}: ${items.length} item(s) drifted`];
    for (const i of items) {
        lines.push(`  ${i.kind} ${i.name}: ${i.what}`);
        if (diffs[i.name]) lines.push(...diffs[i.name].trimEnd().split("\n").map((l) => `    ${l}`));
    }
    return lines.join("\n");
}
