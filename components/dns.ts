// Publishes the record model of lib/dns.ts. One switch, two backends:
//   cloudflare: one cloudflare.DnsRecord per record through an explicit provider (token kept secret);
//   lab:        the unbound local-data text for the lab DNS (the caller writes it to $LAB_RUN/dns/).
import * as cloudflare from "@pulumi/cloudflare";
import * as pulumi from "@pulumi/pulumi";
import { DnsRecordSpec, normalizeName, recordResourceNames, renderUnbound, txtCharacterStrings } from "../lib/dns";

export const DNS_COMMENT = "managed by mailinfra";

export interface CloudflareBackend {
    kind: "cloudflare";
    /** Cloudflare zone id per zone name (the zone field of the records). */
    zoneIds: Record<string, pulumi.Input<string>>;
    apiToken: pulumi.Input<string>;
}

export interface LabBackend {
    kind: "lab";
}

export type DnsBackend = CloudflareBackend | LabBackend;

export interface CloudflareDns {
    kind: "cloudflare";
    provider: cloudflare.Provider;
    /** By resource name, e.g. "mx:wikimedia.org:10". */
    records: Record<string, cloudflare.DnsRecord>;
}

export interface LabDns {
    kind: "lab";
    /** unbound config text (local-data lines) for $LAB_RUN/dns/<file>.conf. */
    unbound: string;
}

/** The Cloudflare content of a record: TXT as quoted character strings (as the API expects), the rest as is. */
export function cloudflareContent(r: DnsRecordSpec): string {
    return r.type === "TXT" ? txtCharacterStrings(r.content) : r.content;
}

export function deployDns(records: DnsRecordSpec[], backend: CloudflareBackend): CloudflareDns;
export function deployDns(records: DnsRecordSpec[], backend: LabBackend): LabDns;
export function deployDns(records: DnsRecordSpec[], backend: DnsBackend): CloudflareDns | LabDns;
export function deployDns(records: DnsRecordSpec[], backend: DnsBackend): CloudflareDns | LabDns {
    switch (backend.kind) {
        case "lab":
            return { kind: "lab", unbound: renderUnbound(records) };
        case "cloudflare":
            return deployCloudflare(records, backend);
        default:
            throw new Error(`deployDns: unknown backend ${JSON.stringify((backend as { kind: unknown }).kind)}`);
    }
}

function deployCloudflare(records: DnsRecordSpec[], backend: CloudflareBackend): CloudflareDns {
    // Every check happens before the first registration: a bad map registers nothing.
    const zoneIds = new Map(Object.entries(backend.zoneIds).map(([zone, id]) => [normalizeName(zone, "zone"), id]));
    const missing = [...new Set(records.map((r) => r.zone).filter((z) => !zoneIds.has(z)))].sort();
    if (missing.length)
        throw new Error(
            `deployDns: no Cloudflare zone id for zone${missing.length > 1 ? "s" : ""} ${missing.map((z) => `"${z}"`).join(", ")} ` +
                `(needed by ${records.filter((r) => missing.includes(r.zone)).length} records); add ${missing.length > 1 ? "them" : "it"} to zoneIds`,
        );
    const names = recordResourceNames(records);

    const provider = new cloudflare.Provider("cloudflare-dns", { apiToken: pulumi.secret(backend.apiToken) });
    const out: Record<string, cloudflare.DnsRecord> = {};
    records.forEach((r, i) => {
        out[names[i]] = new cloudflare.DnsRecord(
            names[i],
            {
                zoneId: zoneIds.get(r.zone)!,
                name: r.name,
                type: r.type,
                content: cloudflareContent(r),
                ...(r.type === "MX" ? { priority: r.priority } : {}),
                ttl: r.ttl,
                proxied: false,
                comment: DNS_COMMENT,
            },
            // Cloudflare refuses a second identical record, so a replacement must delete the old one first.
            { provider, deleteBeforeReplace: true },
        );
    });
    return { kind: "cloudflare", provider, records: out };
}
