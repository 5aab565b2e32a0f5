// Drift audit: what a host should have (the same HostPlans the program deploys) against what it has.
// Pure: scripts/drift.ts observes hosts; this renders the expectation and judges the observation with the
// same observations and probes as the provider's read() (lib/observe.ts, lib/hostScripts.ts), so it reports
// exactly what `pulumi up --refresh` would repair. Files rendered from secrets are compared by hash only.
import { sha256 } from "./hash";
import { directoryScript, HostScript, membershipScript, mountScript, serviceScript, userScript } from "./hostScripts";
import { BatchItem, BatchResult, batchScript, fileDifferences, fileObserveScript, packagesNotInstalled, packagesObserveScript, parseBatch, parseFileObservation } from "./observe";
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
    packages: string[];
    /** Users, group memberships, directories, mounts and services, with the probes refresh runs. */
    scripts: HostScript[];
}

/** Every managed item of a host as MailHost deploys it; secret files rendered only to hash them. */
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
    const hashOf = new Map(files.map((f) => [f.path, f.sha256]));
    const scripts = [
        ...plan.users.map(userScript),
        ...plan.groupMemberships.map(membershipScript),
        ...plan.directories.map(directoryScript),
        ...plan.mounts.map(mountScript),
        ...plan.services.map((svc) => serviceScript(svc, plan.files.filter((f) => f.notify?.includes(svc.name)).map((f) => `${f.path}=${hashOf.get(f.path)}`))),
    ];
    return { host: plan.host, files, packages: plan.packages, scripts };
}

/** The batch of observations of one host: the same file and package checks and Script probes as refresh. */
function observeItems(e: ExpectedHost): BatchItem[] {
    return [
        // non-secret files come with their content when it differs (for the diff); secret files only by hash
        ...e.files.map((f) => ({ key: `file ${f.path}`, script: fileObserveScript(f.path, f.secret ? undefined : f.sha256) })),
        { key: "packages", script: packagesObserveScript(e.packages) },
        ...e.scripts.map((s) => ({ key: `${s.kind} ${s.name}`, script: s.probe })),
    ];
}

/** The SSH script that observes one host (its output framed by `marker`). */
export function observeScript(e: ExpectedHost, marker: string): string {
    return batchScript(observeItems(e), marker);
}

export type Observed = Map<string, BatchResult>;

export function parseObservation(e: ExpectedHost, marker: string, stdout: string): Observed {
    return parseBatch(observeItems(e), marker, stdout).results;
}

export interface DriftItem {
    kind: "file" | "package" | HostScript["kind"];
    name: string;
    /** One line: what differs. */
    what: string;
    /** The file's content on the host, when it differs and may be shown (not secret). */
    onHost?: string;
}

export function compareHost(e: ExpectedHost, o: Observed): DriftItem[] {
    const out: DriftItem[] = [];
    const unobserved = (kind: DriftItem["kind"], name: string) => out.push({ kind, name, what: "not observed (the host's check script failed)" });
    for (const f of e.files) {
        const r = o.get(`file ${f.path}`);
        if (!r) {
            unobserved("file", f.path);
            continue;
        }
        const seen = parseFileObservation(r.out);
        const d = fileDifferences(f, seen);
        if (d.missing || seen.missing) {
            out.push({ kind: "file", name: f.path, what: "missing" });
            continue;
        }
        const problems: string[] = [];
        if (d.content) problems.push(f.secret ? "content differs (secret: compared by hash only)" : "content differs");
        if (d.owner || d.group) problems.push(`owner ${seen.owner}:${seen.group}, expected ${f.owner}:${f.group}`);
        if (d.mode) problems.push(`mode ${d.mode}, expected ${f.mode}`);
        if (problems.length) out.push({ kind: "file", name: f.path, what: problems.join("; "), ...(d.content && !f.secret && seen.content !== undefined ? { onHost: seen.content } : {}) });
    }
    const pkgs = o.get("packages");
    if (!pkgs) unobserved("package", e.packages.join(" "));
    else for (const p of packagesNotInstalled(e.packages, pkgs.out)) out.push({ kind: "package", name: p.name, what: p.state && p.state !== "un" ? `dpkg state ${p.state}` : "not installed" });
    for (const s of e.scripts) {
        const r = o.get(`${s.kind} ${s.name}`);
        if (!r) unobserved(s.kind, s.name);
        else if (r.rc !== 0) out.push({ kind: s.kind, name: s.name, what: r.out.trim().split("\n").pop() || `probe failed (exit ${r.rc})` });
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
