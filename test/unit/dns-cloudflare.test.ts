// deployDns (components/dns.ts) under pulumi.runtime.setMocks: the Cloudflare resources it registers
// for the prod plan, the secret API token, zone-id mapping and the lab backend.
import * as pulumi from "@pulumi/pulumi";
import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { DnsRecordSpec, planDnsRecords, recordResourceNames } from "../../lib/dns";
import type { DnsBackend } from "../../components/dns";
import { stackConfig } from "./stackConfig";

const SECRET_SIG = pulumi.runtime.specialSigKey;
const TOKEN = "cf-token-for-test-0123456789";
const DNS_RECORD = "cloudflare:index/dnsRecord:DnsRecord";

interface Registered {
    type: string;
    name: string;
    inputs: any;
    provider?: string;
}

const records = planDnsRecords(parseStackConfig(stackConfig("prod")));
const zoneIds = Object.fromEntries([...new Set(records.map((r) => r.zone))].map((z) => [z, `zone-id-of-${z}`]));

const isSecretEnvelope = (v: unknown) => !!v && typeof v === "object" && (v as any)[SECRET_SIG] === pulumi.runtime.specialSecretSig;
const settled = (o: pulumi.Output<unknown>) => new Promise((ok) => o.apply(ok));

async function run(recs: DnsRecordSpec[], backend: DnsBackend) {
    const resources: Registered[] = [];
    pulumi.runtime.setMocks(
        {
            newResource: (args) => {
                resources.push({ type: args.type, name: args.name, inputs: args.inputs, provider: args.provider });
                return { id: `${args.name}-id`, state: args.inputs };
            },
            call: () => ({}),
        },
        "mailinfra",
        "prod",
        false,
    );
    const { deployDns } = await import("../../components/dns.js");
    try {
        const result = deployDns(recs, backend);
        if (result.kind === "cloudflare") await Promise.all([result.provider, ...Object.values(result.records)].map((r) => settled(r.id)));
        return { result, resources };
    } catch (e) {
        // let anything registered before the error reach the mock
        await new Promise((r) => setTimeout(r, 100));
        return { error: e as Error, resources };
    }
}

describe("deployDns with the cloudflare backend (prod plan, mocks)", () => {
    it("registers one DnsRecord per planned record under its readable name", async () => {
        const { resources } = await run(records, { kind: "cloudflare", zoneIds, apiToken: TOKEN });
        const dns = resources.filter((r) => r.type === DNS_RECORD);
        expect(dns.map((r) => r.name).sort()).toEqual([...recordResourceNames(records)].sort());
        expect(dns.map((r) => r.inputs.type).sort()).toEqual(records.map((r) => r.type).sort());
    });

    it("gives every mail domain MX 10 to the relay and MX 50 to lily", async () => {
        const { resources } = await run(records, { kind: "cloudflare", zoneIds, apiToken: TOKEN });
        const byName = new Map(resources.map((r) => [r.name, r.inputs]));
        expect(byName.get("mx:wikimedia.org:10")).toMatchObject({ type: "MX", name: "wikimedia.org", content: "mchenry.wikimedia.org", priority: 10, ttl: 300 });
        expect(byName.get("mx:wikipedia.org:50")).toMatchObject({ type: "MX", name: "wikipedia.org", content: "lily.wikimedia.org", priority: 50, ttl: 300 });
        const mx = resources.filter((r) => r.type === DNS_RECORD && r.inputs.type === "MX");
        expect(mx).toHaveLength(20);
        expect(mx.filter((r) => r.inputs.priority === 10).every((r) => r.inputs.content === "mchenry.wikimedia.org")).toBe(true);
        expect(mx.filter((r) => r.inputs.priority === 50).every((r) => r.inputs.content === "lily.wikimedia.org")).toBe(true);
        for (const r of resources.filter((r) => r.type === DNS_RECORD && r.inputs.type !== "MX")) expect(r.inputs.priority).toBeUndefined();
    });

    it("publishes every record unproxied, with the mailinfra comment", async () => {
        const { resources } = await run(records, { kind: "cloudflare", zoneIds, apiToken: TOKEN });
        const dns = resources.filter((r) => r.type === DNS_RECORD);
        expect(dns).toHaveLength(records.length);
        for (const r of dns) expect(r.inputs).toMatchObject({ proxied: false, comment: "managed by mailinfra" });
    });

    it("sends TXT content as quoted character strings, as the Cloudflare API expects", async () => {
        const { resources } = await run(records, { kind: "cloudflare", zoneIds, apiToken: TOKEN });
        const spf = resources.find((r) => r.name === "txt:wikimedia.org:spf");
        expect(spf?.inputs.content).toBe('"v=spf1 mx ip4:203.0.113.10 ip4:203.0.113.12 -all"');
        expect(resources.find((r) => r.name === "txt:_dmarc.wikimedia.org:dmarc")?.inputs.content).toBe('"v=DMARC1; p=none; rua=mailto:noc@wikimedia.org"');
    });

    it("maps each record to the zone id of its zone", async () => {
        const { resources } = await run(records, { kind: "cloudflare", zoneIds, apiToken: TOKEN });
        const byName = new Map(resources.map((r) => [r.name, r.inputs]));
        recordResourceNames(records).forEach((name, i) => expect(byName.get(name)?.zoneId).toBe(`zone-id-of-${records[i].zone}`));
        expect(byName.get("mx:rt.wikimedia.org:10")?.zoneId).toBe("zone-id-of-wikimedia.org");
        expect(byName.get("ptr:10.113.0.203.in-addr.arpa")?.zoneId).toBe("zone-id-of-113.0.203.in-addr.arpa");
    });

    it("keeps the API token secret and routes every record through the explicit provider", async () => {
        const { result, resources } = await run(records, { kind: "cloudflare", zoneIds, apiToken: TOKEN });
        if (result?.kind !== "cloudflare") throw new Error("expected the cloudflare backend");
        expect(await pulumi.isSecret(result.provider.apiToken)).toBe(true);
        const providers = resources.filter((r) => r.type === "pulumi:providers:cloudflare");
        expect(providers.map((p) => p.name)).toEqual(["cloudflare-dns"]);
        expect(isSecretEnvelope(providers[0].inputs.apiToken)).toBe(true);
        for (const r of resources.filter((r) => r.type === DNS_RECORD)) {
            expect(r.provider).toMatch(/::cloudflare-dns::cloudflare-dns-id$/);
            expect(JSON.stringify(r.inputs)).not.toContain(TOKEN);
        }
    });

    it("keeps a token that is already a secret Output secret", async () => {
        const { result } = await run(records.slice(0, 1), { kind: "cloudflare", zoneIds, apiToken: pulumi.secret(TOKEN) });
        if (result?.kind !== "cloudflare") throw new Error("expected the cloudflare backend");
        expect(await pulumi.isSecret(result.provider.apiToken)).toBe(true);
    });

    it("fails naming the zone when its zone id is missing, before registering anything", async () => {
        const partial = { ...zoneIds };
        delete partial["wiktionary.org"];
        const { error, resources } = await run(records, { kind: "cloudflare", zoneIds: partial, apiToken: TOKEN });
        expect(error?.message).toMatch(/no Cloudflare zone id for zone "wiktionary\.org" \(needed by 4 records\)/);
        expect(resources).toEqual([]);
    });

    it("names every missing zone at once", async () => {
        const { error } = await run(records, { kind: "cloudflare", zoneIds: { "wikimedia.org": "z" }, apiToken: TOKEN });
        expect(error?.message).toMatch(/zones "113\.0\.203\.in-addr\.arpa", "mediawiki\.org", .*"wiktionary\.org"/);
    });
});

describe("deployDns with the lab backend", () => {
    it("returns the unbound text and registers no resources", async () => {
        const lab = planDnsRecords(parseStackConfig(stackConfig("lab")));
        const { result, resources } = await run(lab, { kind: "lab" });
        expect(resources).toEqual([]);
        if (result?.kind !== "lab") throw new Error("expected the lab backend");
        expect(result.unbound).toContain('  local-data: "wikimedia.test. 300 IN MX 10 mchenry.lab.test."\n');
    });
});
