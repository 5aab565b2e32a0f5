// Mozilla's intermediate TLS profile on every TLS port, judged from the build machine (outside ownNetworks)
// by testssl.sh (Debian's package, installed by scripts/setup.sh): protocols (-p) and each of its ~370
// ciphers (-e), JSON output. Then the ticket systems' web UIs: HTTPS only, the configured certificate.
import { spawn } from "child_process";
import * as fs from "fs";
import * as http from "http";
import * as https from "https";
import * as os from "os";
import * as path from "path";
import { beforeAll, describe, expect, it } from "vitest";
import { observeTls, portOpen } from "../../lib/probe";
import { certificatePin, pinnedTls } from "../../lib/smoke";
import { checkServedCertificate, TlsMode } from "../../lib/status";
import * as yaml from "js-yaml";
import { convergedLab, FLEET, REPO, ssh } from "./harness";

/** Lab hosts by name, from lab/hosts. */
const ADDRESS: Record<string, string> = Object.fromEntries(
    fs.readFileSync(path.join(REPO, "lab", "hosts"), "utf8").split("\n").filter((l) => /^[a-z]/.test(l)).map((l) => l.split(/\s+/).slice(0, 2) as [string, string]),
);
/** Every port that may carry TLS, and how it starts. */
const TLS_PORTS: [number, TlsMode][] = [[25, "starttls"], [465, "implicit"], [587, "starttls"], [993, "implicit"], [443, "implicit"]];
/** What each host must serve to the internet at least (the store's 25 is firewalled to the relays and lily). */
const REQUIRED: Record<string, number[]> = { mchenry: [25, 465], sanger: [465, 587, 993], lily: [25, 443], otrs: [443], streber: [443] };

interface Target {
    host: string;
    address: string;
    port: number;
    mode: TlsMode;
}

let targets: Target[] = [];
let labCertificate = "";

beforeAll(async () => {
    convergedLab(FLEET);
    const stack = yaml.load(fs.readFileSync(path.join(REPO, "Pulumi.lab.yaml"), "utf8")) as { config: Record<string, { certificate?: string }> };
    labCertificate = stack.config["mailinfra:tls"].certificate!;
    const found = await Promise.all(
        FLEET.flatMap((host) => TLS_PORTS.map(async ([port, mode]) => ((await portOpen(ADDRESS[host], port)) ? { host, address: ADDRESS[host], port, mode } : undefined))),
    );
    targets = found.filter((t): t is Target => t !== undefined);
}, 900_000);

/** One testssl.sh run: protocols and each cipher (-p already proves nothing below 1.2 is offered, so -e, not
 *  the slower per-protocol -E); no DNS lookups of its own (the build machine has no resolver for the lab). */
function testssl(t: Target, dir: string): Promise<{ target: Target; findings: { id: string; severity: string; finding: string }[]; ms: number; out: string }> {
    const json = path.join(dir, `${t.host}-${t.port}.json`);
    const args = ["--quiet", "--color", "0", "--warnings", "off", "--nodns", "none", "--connect-timeout", "10", "--openssl-timeout", "10", "-p", "-e", "--jsonfile", json, ...(t.mode === "starttls" ? ["-t", "smtp"] : []), `${t.address}:${t.port}`];
    const start = Date.now();
    return new Promise((resolve) => {
        const p = spawn("testssl", args, { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        p.stdout.on("data", (d) => (out += d));
        p.stderr.on("data", (d) => (out += d));
        p.on("error", (e) => resolve({ target: t, findings: [], ms: Date.now() - start, out: `testssl did not start (${e.message}); scripts/setup.sh installs Debian's testssl.sh` }));
        p.on("close", () => resolve({ target: t, findings: fs.existsSync(json) ? JSON.parse(fs.readFileSync(json, "utf8")) : [], ms: Date.now() - start, out }));
    });
}

/** Every host at once, at most `perHost` of its ports at a time (Exim allows 5 connections per outside host). */
async function perHostPool(items: Target[], perHost: number, fn: (t: Target) => Promise<Awaited<ReturnType<typeof testssl>>>) {
    const hosts = [...new Set(items.map((t) => t.host))];
    const runs = await Promise.all(
        hosts.map(async (host) => {
            const mine = items.filter((t) => t.host === host);
            const out: Awaited<ReturnType<typeof testssl>>[] = [];
            let next = 0;
            await Promise.all(Array.from({ length: Math.min(perHost, mine.length) }, async () => {
                while (next < mine.length) out.push(await fn(mine[next++]));
            }));
            return out;
        }),
    );
    return runs.flat();
}

/** What testssl's findings say against the profile: [] when the port is Mozilla intermediate. */
function profileProblems(findings: { id: string; severity: string; finding: string }[]): string[] {
    const problems: string[] = [];
    const by = (id: string) => findings.find((f) => f.id === id)?.finding ?? "(not reported)";
    for (const id of ["SSLv2", "SSLv3", "TLS1", "TLS1_1"]) if (!/^not offered/.test(by(id))) problems.push(`${id}: ${by(id)}`);
    for (const id of ["TLS1_2", "TLS1_3"]) if (!/^offered/.test(by(id))) problems.push(`${id}: ${by(id)}`);
    // each offered cipher: "x1302   TLS_AES_256_GCM_SHA384   ECDH 253   AESGCM   256   <RFC name>"
    const offered = findings.filter((f) => /^cipher[_-]/.test(f.id)).map((c) => ({ rfc: c.finding.trim().split(/\s+/).pop() ?? "", line: c.finding.replace(/\s+/g, " ") }));
    const tls13 = (rfc: string) => /^TLS_(AES_(128|256)_GCM|CHACHA20_POLY1305)_SHA(256|384)$/.test(rfc);
    const tls12 = (rfc: string) => /^TLS_ECDHE_(ECDSA|RSA)_WITH_(AES_(128|256)_GCM_SHA(256|384)|CHACHA20_POLY1305_SHA256)$/.test(rfc);
    for (const c of offered) if (!tls13(c.rfc) && !tls12(c.rfc)) problems.push(`not an ECDHE+AEAD suite: ${c.line}`);
    if (!offered.some((c) => tls12(c.rfc))) problems.push("no TLS 1.2 suite found (scan incomplete?)");
    if (!offered.some((c) => tls13(c.rfc))) problems.push("no TLS 1.3 suite found (scan incomplete?)");
    for (const f of findings) if (f.severity === "FATAL" || f.id === "scanProblem") problems.push(`${f.id}: ${f.finding}`);
    return problems;
}

describe("TLS on every port (Mozilla intermediate)", () => {
    it("finds the roles' TLS ports open from outside", () => {
        console.log(`TLS ports open from the build machine: ${targets.map((t) => `${t.host}:${t.port}`).join(" ")}`);
        for (const [host, ports] of Object.entries(REQUIRED))
            expect({ host, ports: targets.filter((t) => t.host === host).map((t) => t.port) }).toEqual({ host, ports: expect.arrayContaining(ports) });
    });

    it("testssl.sh finds TLS 1.2 and 1.3 only, and only ECDHE with AES-GCM or CHACHA20-POLY1305, on every TLS port", async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-testssl-"));
        const start = Date.now();
        const runs = await perHostPool(targets, 2, (t) => testssl(t, dir));
        const seconds = (Date.now() - start) / 1000;
        console.log(`testssl.sh: ${runs.length} ports in ${seconds.toFixed(0)} s (${runs.map((r) => `${r.target.host}:${r.target.port} ${(r.ms / 1000).toFixed(0)} s`).join(", ")})`);
        const report = Object.fromEntries(runs.map((r) => [`${r.target.host}:${r.target.port}`, r.findings.length ? profileProblems(r.findings) : [`no JSON from testssl: ${r.out.slice(-400)}`]]));
        expect(report).toEqual(Object.fromEntries(runs.map((r) => [`${r.target.host}:${r.target.port}`, []])));
        fs.rmSync(dir, { recursive: true, force: true });
    }, 600_000);

    it("the store's :25, open only to the relays and lily, offers the same profile (openssl from the relay)", () => {
        const handshake = (args: string) =>
            ssh(ADDRESS.mchenry, `echo Q | timeout 20 openssl s_client -connect ${ADDRESS.sanger}:25 -starttls smtp ${args} 2>&1 | grep -m1 'Cipher is' || echo 'no handshake'`).out.trim();
        expect(handshake("-tls1_2 -cipher ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256")).toMatch(/Cipher is ECDHE-(ECDSA|RSA)-AES128-GCM-SHA256/);
        expect(handshake("-tls1_3")).toMatch(/Cipher is TLS_/);
        // CBC under TLS 1.2, and TLS 1.1 at all (the client at security level 0 so it really offers them)
        expect(handshake("-tls1_2 -cipher 'ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA@SECLEVEL=0'")).not.toMatch(/Cipher is (?!\(NONE\))/);
        expect(handshake("-tls1_1 -cipher 'DEFAULT@SECLEVEL=0'")).not.toMatch(/Cipher is (?!\(NONE\))/);
    });

    it("serves the configured certificate on every TLS port (what status checks)", async () => {
        const pin = certificatePin(labCertificate)!.fingerprint256;
        const checks = [];
        for (const t of targets) {
            const seen = await observeTls(t.address, t.port, t.mode);
            checks.push(checkServedCertificate(t.host, t.port, seen.fingerprint256, pin));
        }
        expect(checks.filter((c) => c.verdict !== "ok")).toEqual([]);
    }, 300_000);
});

/** A GET from the build machine; https with the configured certificate as the only trust anchor. */
function get(url: string): Promise<{ status: number; location?: string; body: string }> {
    const tlsOptions = url.startsWith("https:") ? pinnedTls(certificatePin(labCertificate)) : {};
    const client = url.startsWith("https:") ? https : http;
    return new Promise((resolve, reject) => {
        const req = client.get(url, { ...tlsOptions, timeout: 30_000 } as https.RequestOptions, (res) => {
            let body = "";
            res.setEncoding("utf8");
            res.on("data", (d) => (body += d));
            res.on("end", () => resolve({ status: res.statusCode ?? 0, location: res.headers.location, body }));
        });
        req.on("timeout", () => req.destroy(new Error(`timeout: ${url}`)));
        req.on("error", reject);
    });
}

describe("ticket web UIs: HTTPS only", () => {
    for (const [host, app, page, expectPage] of [
        ["streber", "RT", "/rt/", /name="pass"/],
        ["otrs", "Znuny", "/otrs/index.pl", /name="Password"/],
    ] as const) {
        it(`${app}: plain HTTP redirects to HTTPS, which serves the configured certificate and the login page`, async () => {
            const address = ADDRESS[host];
            const plain = await get(`http://${address}${page}`);
            expect({ status: plain.status, location: plain.location }).toEqual({ status: 301, location: `https://${address}${page}` });
            // pinnedTls: the handshake fails unless the served certificate is the lab's tls.certificate
            const secure = await get(`https://${address}${page}`);
            expect(secure.status).toBe(200);
            expect(secure.body).toMatch(expectPage);
            expect((await get(`https://${address}/`)).location).toMatch(new RegExp(`${page.replace(/\./g, "\\.")}$`));
        }, 120_000);
    }

    it("refuses a certificate other than the configured one", async () => {
        // any other certificate: the first CA of the build machine's bundle
        const other = fs.readFileSync("/etc/ssl/certs/ca-certificates.crt", "utf8");
        const tlsOptions = pinnedTls(certificatePin(other));
        const error = await new Promise<string>((resolve) => {
            https.get(`https://${ADDRESS.streber}/rt/`, tlsOptions as https.RequestOptions, () => resolve("connected")).on("error", (e) => resolve(e.message));
        });
        expect(error).toMatch(/not the configured tls\.certificate|self.signed|unable to verify|certificate/);
    });
});
