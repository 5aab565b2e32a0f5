// DNS records of the mail fleet, computed from stack config. Pure: no Pulumi imports, so the record
// model can be tested and rendered (lab unbound) without an engine; components/dns.ts publishes it.
//
// The MX plan follows the seed ("Adding / removing mail domains", "Secondary mail relay"): every mail
// domain has the primary relay as MX 10 and the lists host (lily, the secondary relay) as MX 50.
import { createHash } from "crypto";
import { fqdnOf, hostsWithRole, StackConfig } from "./config";

export type DnsRecordType = "A" | "AAAA" | "MX" | "TXT" | "PTR";

export interface DnsRecordSpec {
    /** Zone the record is published in (no trailing dot, lower case). */
    zone: string;
    /** Fully qualified owner name (no trailing dot, lower case). */
    name: string;
    type: DnsRecordType;
    /** A/AAAA: the address. MX/PTR: the target host name (no trailing dot). TXT: the text itself, unquoted. */
    content: string;
    /** MX only. */
    priority?: number;
    ttl: number;
}

export type DmarcPolicy = "none" | "quarantine" | "reject";

export interface DnsPlanOptions {
    /**
     * The dedicated mailing lists domain (the seed's lists.wikimedia.org), when there is one. It gets the
     * same MX/SPF/DMARC records as every other mail domain. Not part of the stack config yet.
     */
    listsDomain?: string;
    /**
     * Zones the records are published in. Each record goes to the zone that is the longest suffix of its
     * name; a record without one is an error. Default: defaultZones(cfg, opts).
     */
    zones?: string[];
    /** TTL of every record, in seconds. Default 300. */
    ttl?: number;
    /** DMARC policy (p=) of every mail domain. Default "none" (monitoring only). */
    dmarcPolicy?: DmarcPolicy;
    /**
     * Mailbox for DMARC aggregate reports (rua=mailto:...). Default: mail.postmaster. false: no rua.
     * When the mailbox is in another zone than the policy domain, the RFC 7489 §7.1 authorization record
     * <domain>._report._dmarc.<mailbox domain> is published as well (if that zone is managed here).
     */
    dmarcRua?: string | false;
    /** Extra SPF mechanisms placed before "-all", e.g. "ip4:203.0.113.50" for the wiki bulk mail IP. */
    spfExtra?: string[];
    /** Publish PTR records for the host addresses (in the /24 in-addr.arpa zones). Default true. */
    ptr?: boolean;
}

export const DEFAULT_TTL = 300;
export const MX_PRIMARY = 10;
export const MX_SECONDARY = 50;

const HOSTNAME = /^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Lower case, no trailing dot; throws on anything that is not a DNS name. */
export function normalizeName(name: string, what = "name"): string {
    const n = name.trim().toLowerCase().replace(/\.$/, "");
    if (!HOSTNAME.test(n)) throw new Error(`dns: ${what} ${JSON.stringify(name)} is not a valid DNS name`);
    return n;
}

/** 203.0.113.10 → 10.113.0.203.in-addr.arpa */
export function reverseName(ipv4: string): string {
    if (!IPV4.test(ipv4)) throw new Error(`dns: ${JSON.stringify(ipv4)} is not an IPv4 address`);
    return `${ipv4.split(".").reverse().join(".")}.in-addr.arpa`;
}

/** The in-addr.arpa zone of the /24 an address is in: 203.0.113.10 → 113.0.203.in-addr.arpa */
export function reverseZone24(ipv4: string): string {
    return reverseName(ipv4).split(".").slice(1).join(".");
}

/** 10.113.0.203.in-addr.arpa → 203.0.113.10; undefined for anything that is not a full IPv4 reverse name. */
export function addressOfReverseName(name: string): string | undefined {
    const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.in-addr\.arpa$/.exec(name);
    if (!m) return undefined;
    const ip = [m[4], m[3], m[2], m[1]].join(".");
    return IPV4.test(ip) ? ip : undefined;
}

/** Every domain that gets MX/SPF/DMARC: local, RT, relay and legacy Mailman domains, plus the lists domain. */
export function mailDomains(cfg: StackConfig, opts: Pick<DnsPlanOptions, "listsDomain"> = {}): string[] {
    const m = cfg.mail;
    const all = [...m.localDomains, ...m.rtDomains, ...m.relayDomains, ...m.legacyMailmanDomains];
    if (opts.listsDomain !== undefined) all.push(opts.listsDomain);
    return [...new Set(all.map((d) => normalizeName(d, "mail domain")))].sort();
}

const isSubdomain = (name: string, zone: string) => name === zone || name.endsWith(`.${zone}`);

/**
 * The zones assumed when none are given: the host domain and the mail domains, minus those that lie
 * inside another of them (rt.wikimedia.org is in the wikimedia.org zone), plus the /24 reverse zones
 * of the host addresses when PTR records are published.
 */
export function defaultZones(cfg: StackConfig, opts: Pick<DnsPlanOptions, "listsDomain" | "ptr"> = {}): string[] {
    const forward = [...new Set([normalizeName(cfg.mail.hostDomain, "host domain"), ...mailDomains(cfg, opts)])];
    const zones = forward.filter((d) => !forward.some((z) => z !== d && isSubdomain(d, z)));
    if (opts.ptr ?? true) zones.push(...Object.values(cfg.hosts).map((h) => reverseZone24(h.address)));
    return [...new Set(zones)].sort();
}

/** The zone that is the longest suffix of name, or undefined. */
export function zoneOf(name: string, zones: string[]): string | undefined {
    let best: string | undefined;
    for (const z of zones) if (isSubdomain(name, z) && (!best || z.length > best.length)) best = z;
    return best;
}

const TYPE_ORDER: Record<DnsRecordType, number> = { A: 0, AAAA: 1, MX: 2, TXT: 3, PTR: 4 };
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** DNS tree order: label by label from the right (apex first, then its children); numeric labels as numbers. */
export function compareNames(a: string, b: string): number {
    const la = a.split(".").reverse();
    const lb = b.split(".").reverse();
    for (let i = 0; i < Math.min(la.length, lb.length); i++) {
        const c = /^\d+$/.test(la[i]) && /^\d+$/.test(lb[i]) ? Number(la[i]) - Number(lb[i]) : cmp(la[i], lb[i]);
        if (c) return c;
    }
    return la.length - lb.length;
}

/** Canonical order: zone, name (tree order), type (A, AAAA, MX, TXT, PTR), priority, content. */
export function compareRecords(a: DnsRecordSpec, b: DnsRecordSpec): number {
    return (
        compareNames(a.zone, b.zone) ||
        compareNames(a.name, b.name) ||
        TYPE_ORDER[a.type] - TYPE_ORDER[b.type] ||
        (a.priority ?? -1) - (b.priority ?? -1) ||
        cmp(a.content, b.content)
    );
}

/**
 * Assigns zones, de-duplicates and sorts. Throws when a name has no zone, when one record is given with
 * two TTLs, or when a name would get two SPF (RFC 7208 §4.5: permerror) or two DMARC records.
 */
export function finalizeRecords(records: Omit<DnsRecordSpec, "zone">[], zones: string[]): DnsRecordSpec[] {
    const zs = [...new Set(zones.map((z) => normalizeName(z, "zone")))];
    const byKey = new Map<string, DnsRecordSpec>();
    for (const r of records) {
        const name = normalizeName(r.name, `${r.type} record name`);
        const zone = zoneOf(name, zs);
        if (!zone)
            throw new Error(
                `dns: ${r.type} record ${name} is in none of the zones (${zs.length ? zs.join(", ") : "no zones given"}); ` +
                    `add its zone to the zones option`,
            );
        if (!Number.isInteger(r.ttl) || r.ttl < 1) throw new Error(`dns: ${r.type} record ${name}: ttl must be a positive integer (got ${r.ttl})`);
        if (r.type === "MX" && !(Number.isInteger(r.priority) && r.priority! >= 0 && r.priority! <= 65535))
            throw new Error(`dns: MX record ${name}: priority must be an integer 0-65535 (got ${r.priority})`);
        const content = r.type === "MX" || r.type === "PTR" ? normalizeName(r.content, `${r.type} target of ${name}`) : r.content;
        const rec: DnsRecordSpec = { zone, name, type: r.type, content, ...(r.type === "MX" ? { priority: r.priority } : {}), ttl: r.ttl };
        const key = [name, r.type, rec.priority ?? "", content].join("\0");
        const seen = byKey.get(key);
        if (seen && seen.ttl !== rec.ttl) throw new Error(`dns: ${r.type} record ${name} ${content} is given with TTL ${seen.ttl} and ${rec.ttl}`);
        byKey.set(key, rec);
    }
    const out = [...byKey.values()].sort(compareRecords);
    for (const tag of ["v=spf1", "v=DMARC1"]) {
        const names = out.filter((r) => r.type === "TXT" && (r.content === tag || r.content.startsWith(`${tag} `) || r.content.startsWith(`${tag};`))).map((r) => r.name);
        const twice = names.find((n, i) => names.indexOf(n) !== i);
        if (twice) throw new Error(`dns: ${twice} would get two ${tag} TXT records; a name may have one`);
    }
    return out;
}

/** All DNS records of the fleet: MX, SPF, DMARC per mail domain; A and PTR per host. Sorted, de-duplicated. */
export function planDnsRecords(cfg: StackConfig, opts: DnsPlanOptions = {}): DnsRecordSpec[] {
    const ttl = opts.ttl ?? DEFAULT_TTL;
    const ptr = opts.ptr ?? true;
    const zones = opts.zones ?? defaultZones(cfg, opts);
    const relay = hostsWithRole(cfg, "relay")[0];
    if (!relay) throw new Error(`dns: no host has role "relay"; the mail domains have no primary MX`);
    const lists = hostsWithRole(cfg, "lists")[0];
    const mx = [{ priority: MX_PRIMARY, host: relay[0] }, ...(lists ? [{ priority: MX_SECONDARY, host: lists[0] }] : [])];
    for (const m of opts.spfExtra ?? [])
        if (!/^[\x21-\x7e]+$/.test(m)) throw new Error(`dns: spfExtra ${JSON.stringify(m)} is not one SPF term (printable, no spaces)`);
    const senders = [...new Set([relay[1].address, ...(lists ? [lists[1].address] : [])])];
    const spf = ["v=spf1", "mx", ...senders.map((a) => `ip4:${a}`), ...(opts.spfExtra ?? []), "-all"].join(" ");

    const policy = opts.dmarcPolicy ?? "none";
    if (!["none", "quarantine", "reject"].includes(policy)) throw new Error(`dns: dmarcPolicy must be none, quarantine or reject (got ${JSON.stringify(policy)})`);
    const rua = opts.dmarcRua === undefined ? cfg.mail.postmaster : opts.dmarcRua;
    if (rua !== false && !/^[^@\s;,!]+@[^@\s;,!]+$/.test(rua)) throw new Error(`dns: dmarcRua must be a mailbox (got ${JSON.stringify(rua)})`);
    const ruaDomain = rua === false ? undefined : normalizeName(rua.split("@")[1], "dmarcRua domain");
    const dmarc = `v=DMARC1; p=${policy}${rua === false ? "" : `; rua=mailto:${rua}`}`;
    const zs = zones.map((z) => normalizeName(z, "zone"));
    const ruaZone = ruaDomain && zoneOf(ruaDomain, zs);

    const records: Omit<DnsRecordSpec, "zone">[] = [];
    for (const domain of mailDomains(cfg, opts)) {
        // list mail is handled on the lists host: its domain points there (the relay would see itself as MX 10 and loop)
        const domainMx = lists && opts.listsDomain && domain === normalizeName(opts.listsDomain, "listsDomain") ? [{ priority: MX_PRIMARY, host: lists[0] }] : mx;
        for (const m of domainMx) records.push({ name: domain, type: "MX", content: fqdnOf(cfg, m.host), priority: m.priority, ttl });
        records.push({ name: domain, type: "TXT", content: spf, ttl });
        records.push({ name: `_dmarc.${domain}`, type: "TXT", content: dmarc, ttl });
        // RFC 7489 §7.1: a report mailbox outside the policy domain's zone must consent to receiving its reports.
        if (ruaDomain && ruaZone && zoneOf(domain, zs) !== ruaZone)
            records.push({ name: `${domain}._report._dmarc.${ruaDomain}`, type: "TXT", content: "v=DMARC1", ttl });
    }
    for (const [name, h] of Object.entries(cfg.hosts)) {
        const fqdn = fqdnOf(cfg, name);
        records.push({ name: fqdn, type: "A", content: h.address, ttl });
        if (ptr) records.push({ name: reverseName(h.address), type: "PTR", content: fqdn, ttl });
    }
    return finalizeRecords(records, zones);
}

/**
 * A TXT value as RFC 1035 character strings: split into chunks of at most 255 bytes, each in double
 * quotes, with ", \ and non-printable bytes escaped. singleQuoteSafe also escapes ' (for unbound's
 * single-quoted local-data). Cloudflare expects TXT content in exactly this form.
 */
export function txtCharacterStrings(text: string, singleQuoteSafe = false): string {
    const bytes = Buffer.from(text, "utf8");
    const chunks: string[] = [];
    for (let i = 0; i === 0 || i < bytes.length; i += 255) {
        let s = "";
        for (const b of bytes.subarray(i, i + 255)) {
            if (b === 0x22 || b === 0x5c) s += `\\${String.fromCharCode(b)}`;
            else if (b < 0x20 || b > 0x7e || (singleQuoteSafe && b === 0x27)) s += `\\${String(b).padStart(3, "0")}`;
            else s += String.fromCharCode(b);
        }
        chunks.push(`"${s}"`);
    }
    return chunks.join(" ");
}

const ADDRESS: Record<"A" | "AAAA", RegExp> = { A: IPV4, AAAA: /^[0-9a-f:.]+$/i };

/** One unbound local-data/local-data-ptr line (without indentation). */
export function unboundLine(r: DnsRecordSpec): string {
    const name = normalizeName(r.name);
    const owner = `${name}. ${r.ttl} IN`;
    switch (r.type) {
        case "A":
        case "AAAA":
            if (!ADDRESS[r.type].test(r.content) || (r.type === "AAAA" && !r.content.includes(":")))
                throw new Error(`dns: ${r.type} record ${name}: ${JSON.stringify(r.content)} is not an address`);
            return `local-data: "${owner} ${r.type} ${r.content}"`;
        case "MX":
            return `local-data: "${owner} MX ${r.priority} ${normalizeName(r.content)}."`;
        case "PTR": {
            const ip = addressOfReverseName(name);
            const target = normalizeName(r.content);
            return ip ? `local-data-ptr: "${ip} ${r.ttl} ${target}."` : `local-data: "${owner} PTR ${target}."`;
        }
        case "TXT":
            return `local-data: '${owner} TXT ${txtCharacterStrings(r.content, true)}'`;
        default:
            throw new Error(`dns: record type ${JSON.stringify((r as DnsRecordSpec).type)} is not supported`);
    }
}

/**
 * The records as unbound config lines for the lab DNS, which includes $LAB_RUN/dns/*.conf inside its
 * server: clause and declares the zones (SOA/NS) itself, so only local-data lines are emitted.
 */
export function renderUnbound(records: DnsRecordSpec[]): string {
    const lines = [...records].sort(compareRecords).map((r) => `  ${unboundLine(r)}`);
    // our zones are authoritative here (a zone the lab already declares keeps its first declaration)
    const zones = [...new Set(records.map((r) => r.zone))].sort().map((z) => `  local-zone: "${z}." static`);
    return [`# Rendered by mailinfra (lib/dns.ts): ${records.length} records. Do not edit.`, "server:", ...zones, ...lines, ""].join("\n");
}

/**
 * A stable, readable Pulumi resource name per record: "mx:wikimedia.org:10", "a:mchenry.wikimedia.org",
 * "txt:wikimedia.org:spf", "txt:_dmarc.wikimedia.org:dmarc", "ptr:10.113.0.203.in-addr.arpa". Renaming
 * a resource replaces the record, so these must not change. Names that would still collide get the
 * content (A/AAAA/MX/PTR) or a content hash (TXT) appended.
 */
export function recordResourceNames(records: DnsRecordSpec[]): string[] {
    const hash = (s: string) => createHash("sha256").update(s).digest("hex").slice(0, 8);
    const base = records.map((r) => {
        const t = r.type.toLowerCase();
        if (r.type === "MX") return `${t}:${r.name}:${r.priority}`;
        if (r.type === "TXT") {
            const tag = /^v=spf1( |$)/.test(r.content) ? "spf" : /^v=DMARC1(;|$)/.test(r.content) ? "dmarc" : hash(r.content);
            return `${t}:${r.name}:${tag}`;
        }
        return `${t}:${r.name}`;
    });
    const names = base.map((b, i) =>
        base.indexOf(b) === base.lastIndexOf(b) ? b : `${b}:${records[i].type === "TXT" ? hash(records[i].content) : records[i].content}`,
    );
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup) throw new Error(`dns: two records would get the resource name ${dup} (duplicate record?)`);
    return names;
}
