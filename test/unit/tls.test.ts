// TLS everywhere (pure plans + local TLS servers): Mozilla's intermediate profile in every daemon's config,
// the ticket web UIs HTTPS-only, and the client side that trusts exactly the configured certificate.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import * as tls from "tls";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { APACHE_SITE } from "../../lib/parts/apache";
import { TLS_PROFILE } from "../../lib/parts/common";
import { planFleet } from "../../lib/roles";
import { certificatePin, certificateCheckNote, pinnedTls } from "../../lib/smoke";
import { checkServedCertificate } from "../../lib/status";
import { labWith, stackConfig } from "./stackConfig";

const fleet = (raw = stackConfig("lab")) => planFleet(parseStackConfig(raw));
const fileOf = (host: string, p: string, plans = fleet()) => plans.find((h) => h.host === host)!.files.find((f) => f.path === p)?.content ?? "";

describe("Mozilla intermediate profile in every TLS daemon", () => {
    const plans = fleet();

    it("gives every Exim (relay, store, lists, OTRS, RT) the GnuTLS priority string: TLS 1.2/1.3, ECDHE, AEAD", () => {
        for (const p of plans) expect(fileOf(p.host, "/etc/exim4/exim4.conf", plans)).toContain(`tls_require_ciphers = ${TLS_PROFILE.gnutls}\n`);
        expect(TLS_PROFILE.gnutls).toMatch(/^NORMAL:-VERS-ALL:\+VERS-TLS1\.3:\+VERS-TLS1\.2:-CIPHER-ALL:\+AES-128-GCM:\+AES-256-GCM:\+CHACHA20-POLY1305:-MAC-ALL:\+AEAD:-KX-ALL:\+ECDHE-ECDSA:\+ECDHE-RSA:/);
    });

    it("names only ECDHE with AES-GCM or CHACHA20-POLY1305 for OpenSSL's TLS 1.2 list", () => {
        for (const c of TLS_PROFILE.openssl.ciphers12.split(":")) expect(c).toMatch(/^ECDHE-(ECDSA|RSA)-(AES(128|256)-GCM-SHA(256|384)|CHACHA20-POLY1305)$/);
    });

    it("sets Dovecot's minimum protocol, cipher list and the client's order", () => {
        const conf = fileOf("sanger", "/etc/dovecot/dovecot.conf", plans);
        expect(conf).toMatch(/^ssl_min_protocol = TLSv1\.2$/m);
        expect(conf).toContain(`ssl_cipher_list = ${TLS_PROFILE.openssl.ciphers12}\n`);
        expect(conf).toMatch(/^ssl_prefer_server_ciphers = no$/m);
    });

    it("sets nginx's protocols and ciphers on lily's HTTPS server", () => {
        const site = fileOf("lily", "/etc/nginx/sites-enabled/mailman3-web", plans);
        expect(site).toContain("ssl_protocols TLSv1.2 TLSv1.3;");
        expect(site).toContain(`ssl_ciphers ${TLS_PROFILE.openssl.ciphers12};`);
        expect(site).toContain("ssl_prefer_server_ciphers off;");
    });
});

describe("RT and Znuny web UIs", () => {
    const plans = fleet();

    for (const host of ["streber", "otrs"]) {
        it(`${host}: HTTPS with the managed certificate, plain HTTP only redirects, checked by apache2 -t before it goes live`, () => {
            const plan = plans.find((p) => p.host === host)!;
            const site = plan.files.find((f) => f.path === APACHE_SITE)!;
            expect(site.content).toMatch(/<VirtualHost \*:80>\n\s+ServerName \S+\n\s+RewriteEngine on\n\s+RewriteRule \^ https:\/\/%\{SERVER_NAME\}%\{REQUEST_URI\} \[R=301,L\]/);
            expect(site.content).toMatch(/SSLCertificateFile \/etc\/ssl\/certs\/mailinfra\.pem\n\s+SSLCertificateKeyFile \/etc\/ssl\/private\/mailinfra\.key/);
            expect(site.content).toContain("SSLProtocol -all +TLSv1.2 +TLSv1.3");
            expect(site.validate).toContain('apache2 -t -d "$d" -f "$d/apache2.conf"');
            expect(site.requires).toEqual(["/etc/ssl/certs/mailinfra.pem", "/etc/ssl/private/mailinfra.key"]);
            // a new certificate reloads Apache
            expect(plan.files.find((f) => f.path === "/etc/ssl/certs/mailinfra.pem")!.notify).toContain("apache2");
            expect(plan.steps.find((s) => s.name === "apache")!.script).toMatch(/a2dissite -q 000-default/);
        });
    }

    it("keeps plain HTTP on loopback for rt-mailgate only (RT, not Znuny)", () => {
        expect(fileOf("streber", APACHE_SITE, plans)).toContain("<VirtualHost 127.0.0.1:80 [::1]:80>");
        expect(fileOf("otrs", APACHE_SITE, plans)).not.toContain("127.0.0.1:80");
    });

    it("uses Debian's snakeoil pair when no tls.certificate is configured", () => {
        const site = fileOf("streber", APACHE_SITE, fleet(labWith((c) => delete c.tls.certificate)));
        expect(site).toMatch(/SSLCertificateFile \/etc\/ssl\/certs\/ssl-cert-snakeoil\.pem\n\s+SSLCertificateKeyFile \/etc\/ssl\/private\/ssl-cert-snakeoil\.key/);
    });
});

/** A self-signed certificate (or one issued by `ca`), made with openssl in a temp dir. */
function makeCert(dir: string, name: string, ca?: { cert: string; key: string }): { cert: string; key: string } {
    const key = path.join(dir, `${name}.key`);
    const cert = path.join(dir, `${name}.pem`);
    const base = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-subj", `/CN=${name}`];
    if (!ca) execFileSync("openssl", ["req", "-x509", ...base, "-out", cert, "-days", "2", "-addext", "basicConstraints=critical,CA:true"], { stdio: "ignore" });
    else {
        const csr = path.join(dir, `${name}.csr`);
        execFileSync("openssl", ["req", ...base, "-out", csr], { stdio: "ignore" });
        execFileSync("openssl", ["x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial", "-out", cert, "-days", "2"], { stdio: "ignore" });
    }
    return { cert, key };
}

describe("client side: trust exactly the configured certificate", () => {
    let dir: string;
    let servers: tls.Server[] = [];
    const read = (f: string) => fs.readFileSync(f, "utf8");

    beforeAll(() => {
        dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-pin-"));
    });
    afterAll(() => {
        servers.forEach((s) => s.close());
        fs.rmSync(dir, { recursive: true, force: true });
    });

    async function serve(cert: string, key: string): Promise<number> {
        const s = tls.createServer({ cert, key }, (c) => c.end("ok\n"));
        servers.push(s);
        await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
        return (s.address() as { port: number }).port;
    }
    function handshake(port: number, options: tls.ConnectionOptions): Promise<string> {
        return new Promise((resolve) => {
            const c = tls.connect({ host: "127.0.0.1", port, ...options }, () => {
                c.destroy();
                resolve("accepted");
            });
            c.on("error", (e) => resolve(e.message));
        });
    }

    it("accepts the configured self-signed certificate and refuses any other before a byte is sent", async () => {
        const mine = makeCert(dir, "mine");
        const other = makeCert(dir, "other");
        const port = await serve(read(other.cert), read(other.key));
        expect(await handshake(port, pinnedTls(certificatePin(read(mine.cert))))).toMatch(/self.signed certificate/);
        const good = await serve(read(mine.cert), read(mine.key));
        expect(await handshake(good, pinnedTls(certificatePin(read(mine.cert))))).toBe("accepted");
    });

    it("accepts a CA-issued leaf configured without its root, but no other leaf of the same CA", async () => {
        const ca = makeCert(dir, "ca");
        const leaf = makeCert(dir, "leaf", ca);
        const sibling = makeCert(dir, "sibling", ca);
        const port = await serve(read(leaf.cert), read(leaf.key));
        // partial chain: the configured leaf alone is the trust anchor
        expect(await handshake(port, pinnedTls(certificatePin(read(leaf.cert))))).toBe("accepted");
        // the CA in the configured chain verifies the sibling; the leaf check still refuses it
        const siblingPort = await serve(read(sibling.cert), read(sibling.key));
        expect(await handshake(siblingPort, pinnedTls(certificatePin(read(leaf.cert) + read(ca.cert))))).toMatch(/served certificate .* not the configured tls\.certificate/);
    });

    it("says what it checked, and that snakeoil cannot be verified", () => {
        expect(certificateCheckNote(undefined)).toMatch(/not verified: no tls\.certificate configured/);
        expect(pinnedTls(undefined)).toEqual({ rejectUnauthorized: false, minVersion: "TLSv1.2" });
        expect(() => certificatePin("not a certificate")).toThrow(/holds no PEM certificate/);
    });

    it("status: the served certificate must be the configured one", () => {
        expect(checkServedCertificate("lily", 443, "AA:BB", "AA:BB").verdict).toBe("ok");
        expect(checkServedCertificate("lily", 443, "CC:DD", "AA:BB")).toMatchObject({ verdict: "fail", detail: expect.stringMatching(/not the configured tls\.certificate/) });
        expect(checkServedCertificate("lily", 443, "CC:DD", undefined)).toMatchObject({ verdict: "warn", detail: expect.stringMatching(/snakeoil/) });
    });
});
