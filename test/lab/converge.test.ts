// `pulumi up --refresh` is the converge verb: on the converged lab, each drift below is put back by one
// `up --refresh` (which ends with the smoke mail), after which a second `up --refresh` makes 0 changes; a host
// reset to bare is rebuilt completely by the same single command. Timings are printed for the bench.
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { convergedLab, FLEET, must, pulumi, REPO, run, ssh, swaksFromExt, waitFor } from "./harness";

const RELAY = "198.51.100.11";
const STORE = "198.51.100.12";
const RT = "198.51.100.15";
const ALIASES = "/etc/exim4/aliases/wikimedia.test";
const TLS_KEY = "/etc/ssl/private/mailinfra.key";
const FILTER = "/etc/exim4/system_filter";
const DOVECOT_CONF = "/etc/dovecot/dovecot.conf";
const RT_DB = "/var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb";

const timings: Record<string, number> = {};

/** One `pulumi up --refresh` (the program sends the smoke mail during it); returns its output and seconds. */
function converge(extra: string[] = []): { out: string; seconds: number } {
    const started = Date.now();
    const r = must(pulumi(["up", "--refresh", "--stack", "lab", "--yes", "--skip-preview", ...extra]), `pulumi up --refresh ${extra.join(" ")}`);
    return { out: r.out, seconds: (Date.now() - started) / 1000 };
}

/** The second converge: nothing drifted any more, nothing changes. */
function expectNoChanges(): number {
    const { out, seconds } = converge(["--expect-no-changes"]);
    expect(out).not.toMatch(/\b\d+ (to )?(create|update|delete|replace)d?\b/);
    return seconds;
}

/** One drift case: break it, converge once (timed), check the repair and the smoke mail, converge again. */
function repairs(name: string, breakIt: () => void, check: (out: string) => void): void {
    breakIt();
    const { out, seconds } = converge();
    timings[name] = seconds;
    expect(out).toMatch(/smoke test passed/);
    check(out);
    timings[`${name} (second up --refresh)`] = expectNoChanges();
}

describe("pulumi up --refresh repairs drift on the converged lab", () => {
    beforeAll(() => {
        try {
            convergedLab(FLEET);
        } catch (e) {
            // the first converge's smoke mail can hit a relay retry record (mail sent before the store was up)
            if (!/smoke test failed/.test((e as Error).message)) throw e;
            ssh(RELAY, "exim4 -qff");
            converge();
        }
    });

    afterAll(() => {
        // whatever a failed case left behind (this is the repair under test, and the fleet must stay converged)
        const r = pulumi(["up", "--refresh", "--stack", "lab", "--yes", "--skip-preview"]);
        if (r.code !== 0) console.log(`afterAll converge failed:\n${r.out.slice(-3000)}`);
        console.log(`converge timings (s): ${JSON.stringify(timings, null, 1)}`);
        fs.writeFileSync(path.join(REPO, "bench", "converge-last.json"), JSON.stringify({ at: new Date().toISOString(), seconds: timings }, null, 2) + "\n");
    });

    // the time is a bench figure (bench/converge-last.json), not a pass/fail criterion
    it("undrifted fleet: up --refresh reads every host and changes nothing", () => {
        timings["no-op up --refresh"] = expectNoChanges();
    });

    // Two repair runs of three drifts each (lab time); every drift is checked on its own afterwards.
    it("puts back an alias redirect (shown first by preview --refresh --diff as a text diff under the file's name), the TLS key's mode and a dovecot stopped and disabled by hand", () => {
        repairs(
            "alias line appended + TLS key chmod 0644 + dovecot stopped and disabled",
            () => {
                must(ssh(RELAY, `echo 'evil: attacker@example.net' >> ${ALIASES}`), "append alias");
                must(ssh(STORE, `chmod 0644 ${TLS_KEY}`), "chmod key");
                must(ssh(STORE, "systemctl disable --now dovecot"), "stop dovecot");
                const preview = must(pulumi(["preview", "--refresh", "--diff", "--stack", "lab"]), "preview --refresh --diff");
                const at = preview.out.indexOf(`mchenry${ALIASES}`);
                expect(at).toBeGreaterThanOrEqual(0);
                expect(preview.out.slice(at)).toMatch(/^\s*-\s*evil: attacker@example\.net$/m);
                expect(preview.out).toMatch(/mode\s*: "0644" => "0640"/);
                expect(preview.out).toMatch(/- drift\s*: "inactive, disabled \(expected active, enabled\)"/);
                expect(preview.out).not.toMatch(/PRIVATE KEY/);
                console.log(preview.out.slice(Math.max(0, at - 200), at + 3000));
            },
            (out) => {
                expect(ssh(RELAY, `grep -c attacker ${ALIASES} || true`).out.trim()).toBe("0");
                expect(ssh(RELAY, `exim4 -bt evil@wikimedia.test 2>&1`).out).not.toMatch(/attacker@example\.net/);
                expect(ssh(STORE, `stat -c '%a %U:%G' ${TLS_KEY}`).out.trim()).toBe("640 root:ssl-cert");
                expect(out).not.toMatch(/PRIVATE KEY/);
                expect(ssh(STORE, "systemctl is-active dovecot; systemctl is-enabled dovecot").out.trim().split("\n")).toEqual(["active", "enabled"]);
            },
        );
    });

    it("reinstalls a removed spamassassin, re-creates a deleted system_filter and replaces a dovecot.conf that no longer passes doveconf -n with the declared, checked one", () => {
        repairs(
            "spamassassin removed + system_filter deleted + dovecot.conf broken",
            () => {
                must(ssh(RELAY, "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q spamassassin >/dev/null 2>&1"), "remove spamassassin");
                must(ssh(RELAY, `rm -f ${FILTER}`), "delete filter");
                must(ssh(STORE, `echo 'this is { not dovecot' >> ${DOVECOT_CONF}`), "break dovecot.conf");
                expect(ssh(STORE, "doveconf -n >/dev/null").code).not.toBe(0);
            },
            () => {
                expect(ssh(RELAY, "dpkg-query -W -f='${db:Status-Abbrev}' spamassassin").out.trim()).toBe("ii");
                expect(ssh(RELAY, "systemctl is-active spamd").out.trim()).toBe("active");
                expect(ssh(RELAY, `test -s ${FILTER} && exim4 -bV >/dev/null && echo ok`).out.trim()).toBe("ok");
                expect(ssh(STORE, `grep -c 'not dovecot' ${DOVECOT_CONF} || true`).out.trim()).toBe("0");
                expect(ssh(STORE, "doveconf -n >/dev/null && systemctl is-active dovecot").out.trim()).toBe("active");
            },
        );
    });

    it("rebuilds a host reset to bare (same address) completely in one up --refresh, and mail reaches it", () => {
        must(run(path.join(REPO, "lab", "lab.sh"), ["reset", "streber"]), "reset streber");
        must(run(path.join(REPO, "lab", "lab.sh"), ["up", "streber"]), "streber up");
        expect(ssh(RT, "test -e /usr/sbin/exim4").code).not.toBe(0);
        const { out, seconds } = converge();
        timings["streber reset to bare: rebuild"] = seconds;
        expect(out).toMatch(/smoke test passed/);
        expect(out).not.toMatch(/Unexpected struct type/);
        // a ticket from mail through the relay proves the rebuilt host works
        const t = `converge-${crypto.randomBytes(6).toString("hex")}`;
        expect(swaksFromExt(["--server", RELAY, "--from", "sender@example.net", "--to", "support@rt.wikimedia.test", "--header", `Subject: ${t}`]).out).toMatch(/<[-~]\s+250 /);
        expect(waitFor(() => ssh(RT, `sqlite3 ${RT_DB} "SELECT id FROM Tickets WHERE Subject = '${t}'"`).out.trim() !== "", 90_000, 2000)).toBe(true);
        timings["streber rebuild (second up --refresh)"] = expectNoChanges();
    });
});
