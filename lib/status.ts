// Status of a running fleet, judged against stack config. Pure: the collectors (scripts/status.ts)
// observe hosts, TLS, DNS and SMTP/IMAP; everything here turns observations into verdicts and a table.
import { fqdnOf, hostsWithRole, Role, StackConfig } from "./config";
import { DnsRecordSpec, planDnsRecords } from "./dns";
import { HostPlan } from "./plan";

export type Verdict = "ok" | "warn" | "fail";

export interface Check {
    host: string;
    check: string;
    verdict: Verdict;
    detail: string;
}

export interface Thresholds {
    /** Certificate expiry warning (days). */
    certWarnDays: number;
    queueWarn: number;
    queueFail: number;
    /** Account DB copy on the relay: pushed on change and every 15 min. */
    userdbWarnMinutes: number;
    userdbFailMinutes: number;
    /** Daily backups: older than this is a failure. */
    backupFailHours: number;
}

export const DEFAULT_THRESHOLDS: Thresholds = {
    certWarnDays: 14,
    queueWarn: 50,
    queueFail: 500,
    userdbWarnMinutes: 20,
    userdbFailMinutes: 120,
    backupFailHours: 26,
};

/** What a host of a role must listen on: [port, TLS mode]. */
export type TlsMode = "implicit" | "starttls" | "none";
export const ROLE_PORTS: Record<Role, [number, TlsMode][]> = {
    relay: [[25, "starttls"], [465, "implicit"]],
    imap: [[25, "starttls"], [465, "implicit"], [587, "starttls"], [993, "implicit"]],
    // the secondary MX takes mail from the internet; the ticket hosts only from the relays
    lists: [[25, "starttls"]],
    // the ticket systems' web UIs: HTTPS only (plain HTTP only redirects)
    otrs: [[443, "implicit"]],
    rt: [[443, "implicit"]],
};
/** Ports that must NOT be reachable from outside (plaintext IMAP/POP). */
export const FORBIDDEN_PORTS = [110, 143];

/** Services every host of a role must run; the status command adds each host's planned services. */
export const ROLE_SERVICES: Record<Role, string[]> = {
    relay: ["exim4", "spamd", "unbound"],
    imap: ["exim4", "dovecot", "mailinfra-push-userdb.path"],
    lists: ["exim4"],
    otrs: ["exim4"],
    rt: ["exim4"],
};

/** The same DNS options the program publishes with (components/fleet.ts publishDns). */
export function expectedDnsRecords(cfg: StackConfig): DnsRecordSpec[] {
    return planDnsRecords(cfg, {
        listsDomain: cfg.relay.listsDomain,
        dmarcPolicy: cfg.dns.dmarcPolicy,
        spfExtra: cfg.relay.wikiInterface ? [`ip4:${cfg.relay.wikiInterface}`] : [],
    });
}

/** Hosts that receive mail from the internet (MX targets) — where the open-relay probe matters most. */
export function mxHosts(cfg: StackConfig): string[] {
    const names = new Set(expectedDnsRecords(cfg).filter((r) => r.type === "MX").map((r) => r.content));
    return Object.keys(cfg.hosts).filter((h) => names.has(fqdnOf(cfg, h)));
}

export function checkService(host: string, service: string, state: string): Check {
    return { host, check: `service ${service}`, verdict: state === "active" ? "ok" : "fail", detail: state || "unknown" };
}

/** Ports of a role the firewall opens to everyone; the others (e.g. the store's 25) only to named hosts. */
export function publicPorts(plan: Pick<HostPlan, "ports">): Set<number> {
    return new Set(plan.ports.filter((p) => p.from === "all").map((p) => p.port));
}

/** A role's ports must be listening; those open to everyone (firewallRestricted lacks them) reachable from here too. */
export function checkPorts(host: string, role: Role, listening: number[], reachable: Record<number, boolean>, firewallRestricted: Set<number> = new Set()): Check[] {
    const out: Check[] = [];
    for (const [port] of ROLE_PORTS[role]) {
        if (firewallRestricted.has(port)) {
            out.push({ host, check: `port ${port}`, verdict: listening.includes(port) ? "ok" : "fail", detail: listening.includes(port) ? "listening (firewalled: only its peers may connect)" : "not listening" });
            continue;
        }
        const ok = listening.includes(port) && reachable[port] !== false;
        out.push({ host, check: `port ${port}`, verdict: ok ? "ok" : "fail", detail: !listening.includes(port) ? "not listening" : reachable[port] === false ? "listening but not reachable from here" : "listening" });
    }
    for (const port of FORBIDDEN_PORTS)
        if (reachable[port]) out.push({ host, check: `port ${port}`, verdict: "fail", detail: "plaintext mail port reachable from outside" });
    return out;
}

export function checkQueue(host: string, size: number | undefined, t = DEFAULT_THRESHOLDS): Check {
    if (size === undefined || Number.isNaN(size)) return { host, check: "exim queue", verdict: "fail", detail: "exim4 -bpc gave no number" };
    const verdict: Verdict = size >= t.queueFail ? "fail" : size >= t.queueWarn ? "warn" : "ok";
    return { host, check: "exim queue", verdict, detail: `${size} message(s)` };
}

export function checkCertificate(host: string, port: number, notAfter: Date | undefined, now: Date, t = DEFAULT_THRESHOLDS): Check {
    const check = `certificate :${port}`;
    if (!notAfter) return { host, check, verdict: "fail", detail: "no certificate presented" };
    const days = (notAfter.getTime() - now.getTime()) / 86_400_000;
    const when = notAfter.toISOString().slice(0, 16).replace("T", " ");
    if (days <= 0) return { host, check, verdict: "fail", detail: `expired ${when} UTC` };
    if (days < t.certWarnDays) return { host, check, verdict: "warn", detail: `expires in ${days.toFixed(1)} days (${when} UTC)` };
    return { host, check, verdict: "ok", detail: `expires in ${Math.floor(days)} days` };
}

/** The served certificate must be the configured tls.certificate (its first PEM block, by SHA-256). */
export function checkServedCertificate(host: string, port: number, served: string | undefined, configured: string | undefined): Check {
    const check = `served certificate :${port}`;
    if (!configured) return { host, check, verdict: "warn", detail: "not verifiable: no tls.certificate configured (Debian's snakeoil)" };
    if (!served) return { host, check, verdict: "fail", detail: "no certificate presented" };
    if (served !== configured) return { host, check, verdict: "fail", detail: `serves ${served.slice(0, 23)}…, not the configured tls.certificate ${configured.slice(0, 23)}…` };
    return { host, check, verdict: "ok", detail: `the configured tls.certificate (${configured.slice(0, 23)}…)` };
}

/** Versions that completed a handshake; anything below TLS 1.2 is a failure, no TLS 1.2+ too. */
export function checkTlsVersions(host: string, port: number, accepted: string[]): Check {
    const check = `TLS versions :${port}`;
    const weak = accepted.filter((v) => v === "TLSv1" || v === "TLSv1.1");
    if (weak.length) return { host, check, verdict: "fail", detail: `offers ${weak.join(", ")} (only TLS >= 1.2 allowed)` };
    if (!accepted.length) return { host, check, verdict: "fail", detail: "no TLS handshake succeeded" };
    return { host, check, verdict: "ok", detail: `${accepted.join(", ")}; < 1.2 refused` };
}

export function checkAge(host: string, check: string, mtimeEpoch: number | undefined, now: Date, warnSeconds: number, failSeconds: number, what: string): Check {
    if (mtimeEpoch === undefined || Number.isNaN(mtimeEpoch)) return { host, check, verdict: "fail", detail: `no ${what}` };
    const age = Math.max(0, now.getTime() / 1000 - mtimeEpoch);
    const verdict: Verdict = age >= failSeconds ? "fail" : age >= warnSeconds ? "warn" : "ok";
    return { host, check, verdict, detail: `${humanAge(age)} old` };
}

export function humanAge(seconds: number): string {
    if (seconds < 120) return `${Math.round(seconds)} s`;
    if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
    if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
    return `${(seconds / 86400).toFixed(1)} d`;
}

/** Observed answers per (name, type): MX as "prio target", TXT joined, A/PTR as given. */
export type DnsObservation = Record<string, string[] | { error: string }>;
export const dnsKey = (r: Pick<DnsRecordSpec, "name" | "type">) => `${r.type} ${r.name}`;
export const dnsValue = (r: DnsRecordSpec) => (r.type === "MX" ? `${r.priority} ${r.content}` : r.content);

/** Every expected record must be served; a served value the model does not have is drift too. */
export function checkDns(expected: DnsRecordSpec[], observed: DnsObservation): Check[] {
    const groups = new Map<string, string[]>();
    for (const r of expected) groups.set(dnsKey(r), [...(groups.get(dnsKey(r)) ?? []), dnsValue(r)]);
    const out: Check[] = [];
    for (const [key, want] of groups) {
        const got = observed[key];
        if (!got || !Array.isArray(got)) {
            out.push({ host: "dns", check: key, verdict: "fail", detail: got ? (got as { error: string }).error : "not queried" });
            continue;
        }
        const norm = (v: string) => v.toLowerCase().replace(/\.$/, "");
        const missing = want.filter((w) => !got.map(norm).includes(norm(w)));
        const extra = key.startsWith("TXT ") ? [] : got.filter((g) => !want.map(norm).includes(norm(g)));
        if (missing.length || extra.length)
            out.push({ host: "dns", check: key, verdict: "fail", detail: [missing.length ? `missing ${missing.join(" | ")}` : "", extra.length ? `unexpected ${extra.join(" | ")}` : ""].filter(Boolean).join("; ") });
    }
    const bad = out.length;
    out.unshift({ host: "dns", check: "records match the model", verdict: bad ? "fail" : "ok", detail: `${groups.size - bad}/${groups.size} names match` });
    return out;
}

/** SMTP replies of the security probes, judged. */
export interface ProbeResult {
    host: string;
    probe: string;
    /** What the server answered (code + text, or "connection refused"). */
    answer: string;
    /** The probe expects a refusal: the answer must be one. */
    refused: boolean;
}

export function checkProbe(p: ProbeResult): Check {
    return { host: p.host, check: `probe: ${p.probe}`, verdict: p.refused ? "ok" : "fail", detail: p.answer.replace(/\s+/g, " ").slice(0, 100) };
}

/** SMTP reply codes that refuse a recipient or a command. */
export const isRefusal = (code: number) => code >= 500 || (code >= 400 && code < 500);

/** Hostile local parts the relay must refuse at RCPT (path traversal, pipes, leading dots, quoting). */
export const HOSTILE_LOCAL_PARTS = ["../../etc/passwd", "a|id", "x/y", ".hidden", "%percent-hack", "a!b", '"quoted user"'];

export function verdictOf(checks: Check[]): Verdict {
    return checks.some((c) => c.verdict === "fail") ? "fail" : checks.some((c) => c.verdict === "warn") ? "warn" : "ok";
}

/** 0: all ok; 1: something failed; 2: warnings only. */
export function exitCodeOf(checks: Check[]): number {
    const v = verdictOf(checks);
    return v === "fail" ? 1 : v === "warn" ? 2 : 0;
}

export function renderTable(checks: Check[]): string {
    const rows = checks.map((c) => [c.host, c.check, c.verdict.toUpperCase(), c.detail]);
    const head = ["HOST", "CHECK", "STATUS", "DETAIL"];
    const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (r: string[]) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(width[i]))).join("  ").trimEnd();
    const counts = (["ok", "warn", "fail"] as Verdict[]).map((v) => `${checks.filter((c) => c.verdict === v).length} ${v}`).join(", ");
    return [line(head), ...rows.map(line), "", `${verdictOf(checks).toUpperCase()}: ${counts}`].join("\n");
}

/** Hosts the status command looks at: every host of the stack, with its role. */
export function statusTargets(cfg: StackConfig): { name: string; address: string; role: Role; fqdn: string }[] {
    return Object.entries(cfg.hosts).map(([name, h]) => ({ name, address: h.address, role: h.role, fqdn: fqdnOf(cfg, name) }));
}

export const relayNames = (cfg: StackConfig) => hostsWithRole(cfg, "relay").map(([n]) => n);

/** Accounts the store deferred for their send rate in the current Exim log, as "address:count,…" (the store's submission ACL logs each). */
export const RATE_LIMITED_SCRIPT = `grep -ho 'submission rate limit: [^ ]*' /var/log/exim4/mainlog 2>/dev/null | awk '{n[$4]++} END {for (a in n) printf "%s:%d,", a, n[a]}'`;

/** Deferrals of one account in a day from which the status warns: a sustained attempt (a stolen password looks like this), not a burst. */
export const RATE_LIMIT_WARN_DEFERRALS = 20;

/** Per-account send limit on the store: the accounts it deferred since the log was rotated; a warning for sustained ones. */
export function checkSubmissionRateLimit(host: string, observed: string | undefined, cfg: StackConfig): Check {
    const check = "submission rate limit";
    const sub = cfg.mail.submission;
    const overrides = Object.keys(sub.accountLimits).length;
    const limits = `${sub.messagesPerHour}/h per account${overrides ? `, ${overrides} override(s)` : ""}`;
    if (observed === undefined) return { host, check, verdict: "fail", detail: "not observed" };
    const hits = observed.split(",").filter(Boolean).map((e) => e.split(":"));
    if (!hits.length) return { host, check, verdict: "ok", detail: `no account over its limit in today's log (${limits})` };
    const sustained = hits.some(([, n]) => Number(n) >= RATE_LIMIT_WARN_DEFERRALS);
    return { host, check, verdict: sustained ? "warn" : "ok", detail: `deferred for rate today (${limits}): ${hits.map(([a, n]) => `${a} ${n}x`).join(", ")}` };
}

