// The pure DNS record model (lib/dns.ts) on the committed stack configs, its options and errors, and
// the unbound rendering for the lab DNS.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { describe, expect, it } from "vitest";
import { parseStackConfig, StackConfig } from "../../lib/config";
import {
    compareRecords,
    defaultZones,
    DnsRecordSpec,
    finalizeRecords,
    planDnsRecords,
    recordResourceNames,
    renderUnbound,
    txtCharacterStrings,
    unboundLine,
} from "../../lib/dns";
import { stackConfig } from "./stackConfig";

const prod = () => parseStackConfig(stackConfig("prod"));
const lab = () => parseStackConfig(stackConfig("lab"));

const PROD_MAIL_DOMAINS = [
    "mediawiki.org",
    "rt.wikimedia.org",
    "wikibooks.org",
    "wikimedia.org",
    "wikimediafoundation.org",
    "wikinews.org",
    "wikipedia.org",
    "wikiquote.org",
    "wikisource.org",
    "wiktionary.org",
];

const of = (records: DnsRecordSpec[], type: DnsRecordSpec["type"], name?: string) =>
    records.filter((r) => r.type === type && (name === undefined || r.name === name));
const countByType = (records: DnsRecordSpec[]) =>
    records.reduce<Record<string, number>>((acc, r) => ({ ...acc, [r.type]: (acc[r.type] ?? 0) + 1 }), {});

describe("planDnsRecords on the prod stack", () => {
    const records = planDnsRecords(prod());

    it("gives every mail domain MX 10 to the relay and MX 50 to the lists host, and nothing else", () => {
        const mxNames = [...new Set(of(records, "MX").map((r) => r.name))].sort();
        expect(mxNames).toEqual(PROD_MAIL_DOMAINS);
        for (const d of PROD_MAIL_DOMAINS)
            expect(of(records, "MX", d).map((r) => [r.priority, r.content])).toEqual([
                [10, "mchenry.wikimedia.org"],
                [50, "lily.wikimedia.org"],
            ]);
    });

    it("publishes an A record for every host at <name>.<hostDomain>", () => {
        expect(of(records, "A").map((r) => [r.name, r.content])).toEqual([
            ["lily.wikimedia.org", "203.0.113.12"],
            ["mchenry.wikimedia.org", "203.0.113.10"],
            ["sanger.wikimedia.org", "203.0.113.11"],
            ["streber.wikimedia.org", "203.0.113.14"],
            ["williams.wikimedia.org", "203.0.113.13"],
        ]);
        for (const r of of(records, "A")) expect(r.zone).toBe("wikimedia.org");
    });

    it("publishes a PTR for every host address in the zone of its /24", () => {
        expect(of(records, "PTR").map((r) => [r.zone, r.name, r.content])).toEqual([
            ["113.0.203.in-addr.arpa", "10.113.0.203.in-addr.arpa", "mchenry.wikimedia.org"],
            ["113.0.203.in-addr.arpa", "11.113.0.203.in-addr.arpa", "sanger.wikimedia.org"],
            ["113.0.203.in-addr.arpa", "12.113.0.203.in-addr.arpa", "lily.wikimedia.org"],
            ["113.0.203.in-addr.arpa", "13.113.0.203.in-addr.arpa", "williams.wikimedia.org"],
            ["113.0.203.in-addr.arpa", "14.113.0.203.in-addr.arpa", "streber.wikimedia.org"],
        ]);
    });

    it("publishes exactly one SPF record (mx, relay and lists IPs, -all) per mail domain", () => {
        for (const d of PROD_MAIL_DOMAINS)
            expect(of(records, "TXT", d).map((r) => r.content)).toEqual(["v=spf1 mx ip4:203.0.113.10 ip4:203.0.113.12 -all"]);
    });

    it("publishes a monitoring-only DMARC record reporting to the postmaster per mail domain", () => {
        for (const d of PROD_MAIL_DOMAINS)
            expect(of(records, "TXT", `_dmarc.${d}`).map((r) => r.content)).toEqual(["v=DMARC1; p=none; rua=mailto:noc@wikimedia.org"]);
    });

    it("lets the postmaster's domain accept the DMARC reports of the domains in other zones (RFC 7489 7.1)", () => {
        const auth = records.filter((r) => r.name.includes("._report._dmarc."));
        expect(auth.map((r) => r.name)).toEqual(
            PROD_MAIL_DOMAINS.filter((d) => !d.endsWith("wikimedia.org")).map((d) => `${d}._report._dmarc.wikimedia.org`),
        );
        for (const r of auth) expect(r).toMatchObject({ zone: "wikimedia.org", type: "TXT", content: "v=DMARC1" });
    });

    it("derives the zones: apex domains, the host domain, and the reverse /24; rt.wikimedia.org lives in wikimedia.org", () => {
        expect(defaultZones(prod())).toEqual([...PROD_MAIL_DOMAINS.filter((d) => d !== "rt.wikimedia.org"), "113.0.203.in-addr.arpa"].sort());
        for (const r of records.filter((r) => r.name.endsWith("rt.wikimedia.org"))) expect(r.zone).toBe("wikimedia.org");
        for (const r of records) expect(r.name === r.zone || r.name.endsWith(`.${r.zone}`)).toBe(true);
    });

    it("has 58 records: 5 A, 20 MX, 28 TXT, 5 PTR, all with TTL 300", () => {
        expect(records).toHaveLength(58);
        expect(countByType(records)).toEqual({ A: 5, MX: 20, TXT: 28, PTR: 5 });
        for (const r of records) expect(r.ttl).toBe(300);
    });

    it("is sorted, free of duplicates, and the same whatever order the config lists hosts and domains in", () => {
        expect([...records].sort(compareRecords)).toEqual(records);
        const keys = records.map((r) => `${r.name} ${r.type} ${r.priority ?? ""} ${r.content}`);
        expect(new Set(keys).size).toBe(keys.length);

        const shuffled = prod();
        shuffled.hosts = Object.fromEntries(Object.entries(shuffled.hosts).reverse());
        shuffled.mail.localDomains = [...shuffled.mail.localDomains].reverse();
        shuffled.mail.legacyMailmanDomains = [...shuffled.mail.legacyMailmanDomains].reverse();
        expect(planDnsRecords(shuffled)).toEqual(records);
    });

    it("does not repeat the records of a legacy Mailman domain that is also a local domain", () => {
        expect(of(records, "MX", "wikipedia.org")).toHaveLength(2);
        expect(of(records, "TXT", "wikipedia.org")).toHaveLength(1);
    });
});

describe("planDnsRecords on the lab stack", () => {
    const records = planDnsRecords(lab());

    it("publishes into the lab's zones plus the zone of every lab mail domain", () => {
        expect([...new Set(records.map((r) => r.zone))].sort()).toEqual(["100.51.198.in-addr.arpa", "lab.test", "wikimedia.test", "wikipedia.test", "wikiquote.test"]);
        expect(renderUnbound(records)).toContain('local-zone: "wikiquote.test." static');
    });

    it("points the lab mail domains at mchenry (10) and lily (50)", () => {
        for (const d of ["wikimedia.test", "wikipedia.test", "wikiquote.test", "rt.wikimedia.test"])
            expect(of(records, "MX", d).map((r) => `${r.priority} ${r.content}`)).toEqual(["10 mchenry.lab.test", "50 lily.lab.test"]);
        expect(of(records, "TXT", "wikimedia.test")[0].content).toBe("v=spf1 mx ip4:198.51.100.11 ip4:198.51.100.13 -all");
    });

    it("has 28 records: 5 A, 8 MX, 10 TXT, 5 PTR", () => {
        expect(countByType(records)).toEqual({ A: 5, MX: 8, TXT: 10, PTR: 5 });
    });
});

describe("planDnsRecords options", () => {
    it("adds the lists domain as a mail domain, in the zone of its parent, with the lists host as its only MX", () => {
        const records = planDnsRecords(prod(), { listsDomain: "Lists.Wikimedia.org." });
        // the relay would find itself as MX 10 for a domain it does not handle and loop
        expect(of(records, "MX", "lists.wikimedia.org").map((r) => [r.zone, r.priority, r.content])).toEqual([["wikimedia.org", 10, "lily.wikimedia.org"]]);
        expect(of(records, "TXT", "lists.wikimedia.org")).toHaveLength(1);
        expect(of(records, "TXT", "_dmarc.lists.wikimedia.org")).toHaveLength(1);
        expect(records).toHaveLength(58 + 3);
    });

    it("rejects a lists domain that is not a DNS name", () => {
        expect(() => planDnsRecords(prod(), { listsDomain: "lists wikimedia" })).toThrow(/mail domain "lists wikimedia" is not a valid DNS name/);
    });

    it("uses the configured DMARC policy and report mailbox", () => {
        const records = planDnsRecords(prod(), { dmarcPolicy: "reject", dmarcRua: "dmarc@wikimedia.org" });
        expect(of(records, "TXT", "_dmarc.wikipedia.org")[0].content).toBe("v=DMARC1; p=reject; rua=mailto:dmarc@wikimedia.org");
        expect(() => planDnsRecords(prod(), { dmarcPolicy: "block" as any })).toThrow(/dmarcPolicy must be none, quarantine or reject/);
    });

    it("leaves out rua and the report authorizations when dmarcRua is false", () => {
        const records = planDnsRecords(prod(), { dmarcRua: false });
        expect(of(records, "TXT", "_dmarc.wikipedia.org")[0].content).toBe("v=DMARC1; p=none");
        expect(records.filter((r) => r.name.includes("._report._dmarc."))).toEqual([]);
    });

    it("puts extra SPF mechanisms (e.g. the wiki bulk mail IP) before -all", () => {
        const records = planDnsRecords(prod(), { spfExtra: ["ip4:203.0.113.50"] });
        expect(of(records, "TXT", "wikimedia.org")[0].content).toBe("v=spf1 mx ip4:203.0.113.10 ip4:203.0.113.12 ip4:203.0.113.50 -all");
    });

    it("applies the TTL to every record and rejects a TTL that is not a positive integer", () => {
        for (const r of planDnsRecords(prod(), { ttl: 3600 })) expect(r.ttl).toBe(3600);
        expect(() => planDnsRecords(prod(), { ttl: 0 })).toThrow(/ttl must be a positive integer \(got 0\)/);
    });

    it("publishes no PTR records and no reverse zone when ptr is false", () => {
        expect(of(planDnsRecords(prod(), { ptr: false }), "PTR")).toEqual([]);
        expect(defaultZones(prod(), { ptr: false }).some((z) => z.endsWith("in-addr.arpa"))).toBe(false);
    });

    it("gives MX only to the relay, and SPF only its IP, when there is no lists host", () => {
        const cfg: StackConfig = prod();
        delete cfg.hosts.lily;
        const records = planDnsRecords(cfg);
        expect(of(records, "MX", "wikimedia.org").map((r) => r.priority)).toEqual([10]);
        expect(of(records, "TXT", "wikimedia.org")[0].content).toBe("v=spf1 mx ip4:203.0.113.10 -all");
    });

    it("uses a host's explicit fqdn for its A, PTR and MX target", () => {
        const cfg = prod();
        cfg.hosts.mchenry.fqdn = "mx1.wikimedia.org";
        const records = planDnsRecords(cfg);
        expect(of(records, "A", "mx1.wikimedia.org")[0].content).toBe("203.0.113.10");
        expect(of(records, "PTR", "10.113.0.203.in-addr.arpa")[0].content).toBe("mx1.wikimedia.org");
        expect(of(records, "MX", "wikipedia.org")[0].content).toBe("mx1.wikimedia.org");
    });

    it("puts each record in the longest matching zone of an explicit zone list", () => {
        const zones = [...defaultZones(prod()), "rt.wikimedia.org"];
        const records = planDnsRecords(prod(), { zones });
        for (const r of records.filter((r) => r.name.endsWith("rt.wikimedia.org"))) expect(r.zone).toBe("rt.wikimedia.org");
        expect(of(records, "MX", "wikimedia.org")[0].zone).toBe("wikimedia.org");
    });
});

describe("planDnsRecords errors", () => {
    it("rejects a record whose name is in none of the given zones, naming the record and the zones", () => {
        const zones = defaultZones(prod()).filter((z) => z !== "wiktionary.org");
        expect(() => planDnsRecords(prod(), { zones })).toThrow(/MX record wiktionary\.org is in none of the zones \(.*wikimedia\.org.*\)/);
    });

    it("rejects a host whose fqdn is outside every zone", () => {
        const cfg = prod();
        cfg.hosts.sanger.fqdn = "imap.example.net";
        expect(() => planDnsRecords(cfg)).toThrow(/A record imap\.example\.net is in none of the zones/);
    });

    it("rejects PTR records when the reverse zone is not among the given zones", () => {
        const zones = defaultZones(prod()).filter((z) => !z.endsWith("in-addr.arpa"));
        expect(() => planDnsRecords(prod(), { zones })).toThrow(/PTR record 10\.113\.0\.203\.in-addr\.arpa is in none of the zones/);
    });

    it("rejects one record given with two TTLs", () => {
        const r = { name: "a.example.org", type: "A" as const, content: "192.0.2.1" };
        expect(() => finalizeRecords([{ ...r, ttl: 300 }, { ...r, ttl: 600 }], ["example.org"])).toThrow(/given with TTL 300 and 600/);
    });

    it("rejects two SPF records for one name (an SPF permerror)", () => {
        const spf = (content: string) => ({ name: "example.org", type: "TXT" as const, content, ttl: 300 });
        expect(() => finalizeRecords([spf("v=spf1 -all"), spf("v=spf1 mx -all")], ["example.org"])).toThrow(/example\.org would get two v=spf1 TXT records/);
    });

    it("rejects an MX without a valid priority", () => {
        expect(() => finalizeRecords([{ name: "example.org", type: "MX", content: "mx.example.org", ttl: 300 }], ["example.org"])).toThrow(
            /MX record example\.org: priority must be an integer/,
        );
    });
});

describe("renderUnbound", () => {
    const rec = (r: Omit<DnsRecordSpec, "zone" | "ttl"> & { zone?: string; ttl?: number }): DnsRecordSpec => ({ zone: "wikimedia.test", ttl: 300, ...r });

    it("writes MX, A, TXT and PTR as the lab README's local-data lines", () => {
        expect(unboundLine(rec({ name: "wikimedia.test", type: "MX", priority: 10, content: "mchenry.lab.test" }))).toBe(
            'local-data: "wikimedia.test. 300 IN MX 10 mchenry.lab.test."',
        );
        expect(unboundLine(rec({ name: "lists.wikimedia.test", type: "A", content: "198.51.100.13" }))).toBe(
            'local-data: "lists.wikimedia.test. 300 IN A 198.51.100.13"',
        );
        expect(unboundLine(rec({ name: "wikimedia.test", type: "TXT", content: "v=spf1 ip4:198.51.100.11 -all" }))).toBe(
            `local-data: 'wikimedia.test. 300 IN TXT "v=spf1 ip4:198.51.100.11 -all"'`,
        );
        expect(unboundLine(rec({ zone: "100.51.198.in-addr.arpa", name: "11.100.51.198.in-addr.arpa", type: "PTR", content: "mchenry.lab.test" }))).toBe(
            'local-data-ptr: "198.51.100.11 300 mchenry.lab.test."',
        );
    });

    it("escapes quotes, backslashes and apostrophes in TXT and splits strings longer than 255 bytes", () => {
        expect(unboundLine(rec({ name: "x.wikimedia.test", type: "TXT", content: `say "hi" \\ it's` }))).toBe(
            `local-data: 'x.wikimedia.test. 300 IN TXT "say \\"hi\\" \\\\ it\\039s"'`,
        );
        const long = "k=".padEnd(300, "A");
        expect(txtCharacterStrings(long)).toBe(`"${long.slice(0, 255)}" "${long.slice(255)}"`);
        expect(txtCharacterStrings("")).toBe('""');
    });

    it("refuses names and addresses that would break out of the quoted line", () => {
        expect(() => unboundLine(rec({ name: 'evil" IN A 1.2.3.4 "', type: "A", content: "192.0.2.1" }))).toThrow(/not a valid DNS name/);
        expect(() => unboundLine(rec({ name: "a.wikimedia.test", type: "A", content: '192.0.2.1"' }))).toThrow(/is not an address/);
        expect(() => unboundLine(rec({ name: "wikimedia.test", type: "MX", priority: 10, content: "mx'.lab.test" }))).toThrow(/not a valid DNS name/);
    });

    it("renders the lab plan as one local-data line per record, in plan order", () => {
        const records = planDnsRecords(lab());
        const text = renderUnbound(records);
        const lines = text.split("\n").filter((l) => l.startsWith("  local-data"));
        expect(lines).toHaveLength(records.length);
        expect(lines.filter((l) => l.startsWith("  local-data-ptr: "))).toHaveLength(5);
        expect(text).toContain('  local-data: "wikipedia.test. 300 IN MX 50 lily.lab.test."\n');
        expect(text).toContain(`  local-data: '_dmarc.wikimedia.test. 300 IN TXT "v=DMARC1; p=none; rua=mailto:noc@wikimedia.test"'\n`);
        expect(renderUnbound([...records].reverse())).toBe(text);
    });

    const checkconf = ["/usr/sbin/unbound-checkconf", "/usr/bin/unbound-checkconf"].find((p) => fs.existsSync(p));
    it.skipIf(!checkconf)("renders text that unbound-checkconf accepts as an included file", () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-dns-"));
        try {
            const records = planDnsRecords(prod(), { listsDomain: "lists.wikimedia.org", spfExtra: [`include:"odd'\\value`] });
            fs.mkdirSync(path.join(dir, "dns"));
            fs.writeFileSync(path.join(dir, "dns", "50-program.conf"), renderUnbound(records));
            fs.writeFileSync(
                path.join(dir, "unbound.conf"),
                ["server:", '  username: ""', '  chroot: ""', `  directory: "${dir}"`, '  local-zone: "." static', `  include: "${dir}/dns/*.conf"`, ""].join("\n"),
            );
            expect(execFileSync(checkconf!, [path.join(dir, "unbound.conf")], { encoding: "utf8" })).toContain("no errors");
        } finally {
            fs.rmSync(dir, { recursive: true, force: true });
        }
    });
});

describe("recordResourceNames", () => {
    it("names records by type, name and MX priority or TXT kind", () => {
        const records = planDnsRecords(prod());
        const names = recordResourceNames(records);
        expect(names).toContain("mx:wikimedia.org:10");
        expect(names).toContain("mx:wikimedia.org:50");
        expect(names).toContain("a:mchenry.wikimedia.org");
        expect(names).toContain("txt:wikipedia.org:spf");
        expect(names).toContain("txt:_dmarc.wikipedia.org:dmarc");
        expect(names).toContain("ptr:10.113.0.203.in-addr.arpa");
        expect(new Set(names).size).toBe(records.length);
    });

    it("keeps colliding names apart by their content", () => {
        const mx = (content: string): DnsRecordSpec => ({ zone: "example.org", name: "example.org", type: "MX", priority: 10, content, ttl: 300 });
        expect(recordResourceNames([mx("a.example.org"), mx("b.example.org")])).toEqual(["mx:example.org:10:a.example.org", "mx:example.org:10:b.example.org"]);
    });
});
