// Operations on the converged lab: the status command and the drift audit catch real faults (a stopped
// dovecot, a soon-expiring certificate served by the daemons, a hand-edited alias file), the security
// probes from outside, a backup → restore round trip with a real message, and a cold failover of the
// store onto the spare host with the RTO measured.
import * as crypto from "crypto";
import * as dns from "dns";
import * as fs from "fs";
import * as path from "path";
import * as yaml from "js-yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { waitForMessage } from "../../lib/smoke";
import { convergedLab, FLEET, must, projectCopy, pulumi, REPO, run, smokePassword, ssh, swaksFromExt, waitFor } from "./harness";

const RELAY = "198.51.100.11";
const STORE = "198.51.100.12";
const LISTS = "198.51.100.13";
const SPARE = "198.51.100.16";
const SMOKE = "smoke@wikimedia.test";
const ALIASES = "/etc/exim4/aliases/wikimedia.test";

const tag = () => `ops-${crypto.randomBytes(6).toString("hex")}`;

/** An operator command of this checkout (npm run <name> -- ...), from a project copy when given. */
function command(script: string, args: string[], cwd = REPO) {
    return run("node", [path.join(cwd, "scripts", "run-ts.js"), path.join(cwd, "scripts", script), ...args], {
        cwd,
        env: { PULUMI_BACKEND_URL: `file://${REPO}/.pulumi-state`, PULUMI_HOME: `${REPO}/.pulumi-home` },
    });
}
const status = (...args: string[]) => command("status.ts", ["lab", ...args]);
const drift = () => command("drift.ts", ["lab"]);

/** Sends a tagged message from the internet to the smoke account and waits for it in the store's Maildir. */
function deliverToSmoke(store = STORE): string {
    const t = tag();
    expect(swaksFromExt(["--server", RELAY, "--from", "sender@example.net", "--to", SMOKE, "--header", `Subject: ${t}`]).out).toMatch(/<[-~]\s+250 /);
    expect(waitFor(() => ssh(store, `grep -rlq ${t} /var/vmail/wikimedia.test/smoke/`).code === 0, 90_000)).toBe(true);
    return t;
}

/** convergedLab, once more when the first converge's smoke mail hit a relay retry record (mail sent to
 *  the store before it was up; seen once): flush the relay's queue and converge again. */
function convergedFleet(): void {
    try {
        convergedLab(FLEET);
    } catch (e) {
        if (!/smoke test failed/.test((e as Error).message)) throw e;
        ssh(RELAY, "exim4 -qff");
        must(pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"]), "pulumi up (second try)");
    }
}

describe("operations", () => {
    beforeAll(() => {
        convergedFleet();
        // a healthy store has a backup: take today's
        must(ssh(STORE, "/usr/local/sbin/mailinfra-backup"), "first backup");
    });

    it("status passes on the converged lab: every host, DNS and the probes OK (exit 0)", () => {
        const r = status();
        expect(r.out).toMatch(/mchenry +service spamd +OK +active/);
        expect(r.out).toMatch(/sanger +TLS versions :993 +OK +TLSv1\.2, TLSv1\.3; < 1\.2 refused/);
        expect(r.out).toMatch(/sanger +certificate :993 +OK +expires in \d+ days/);
        expect(r.out).toMatch(/mchenry +account DB copy +OK/);
        expect(r.out).toMatch(/sanger +last backup +OK +.* old \(\d{8}T\d{6}Z, rsync-twice\)/);
        expect(r.out).toMatch(/dns +records match the model +OK/);
        expect(r.out).toMatch(/\nOK: \d+ ok, 0 warn, 0 fail/);
        expect(r.code).toBe(0);
        console.log(r.out);
    });

    it("status and drift report a stopped dovecot (exit 1)", () => {
        must(ssh(STORE, "systemctl stop dovecot"), "stop dovecot");
        try {
            const s = status("--no-probes");
            expect(s.out).toMatch(/sanger +service dovecot +FAIL +inactive/);
            expect(s.out).toMatch(/sanger +port 993 +FAIL +not listening/);
            expect(s.code).toBe(1);
            const d = drift();
            expect(d.out).toMatch(/== sanger: 1 item\(s\) drifted\n +service dovecot: inactive, enabled/);
            expect(d.code).toBe(1);
        } finally {
            must(ssh(STORE, "systemctl start dovecot"), "start dovecot");
        }
    });

    it("status warns about a certificate that expires in 5 days and fails it for not being the configured one (exit 1)", () => {
        const cert = "/etc/ssl/certs/mailinfra.pem";
        const key = "/etc/ssl/private/mailinfra.key";
        must(ssh(STORE, `cp -p ${cert} ${cert}.ops && cp -p ${key} ${key}.ops && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 5 -subj /CN=sanger.lab.test -keyout ${key} -out ${cert} 2>/dev/null && chgrp ssl-cert ${key} && chmod 0640 ${key} && systemctl restart dovecot exim4`), "short-lived certificate");
        try {
            const s = status("--no-probes");
            expect(s.out).toMatch(/sanger +certificate :993 +WARN +expires in [45]\.\d days/);
            expect(s.out).toMatch(/sanger +certificate :465 +WARN +expires in [45]\.\d days/);
            expect(s.out).toMatch(/mchenry +certificate :465 +OK/);
            // a certificate swapped in by hand is not the configured tls.certificate
            expect(s.out).toMatch(/sanger +served certificate :993 +FAIL +serves /);
            expect(s.out).toMatch(/mchenry +served certificate :465 +OK/);
            expect(s.code).toBe(1);
            // the drift audit sees the swapped files; the key only by hash
            const d = drift();
            expect(d.out).toContain(`file ${cert}: content differs`);
            expect(d.out).toContain(`file ${key}: content differs (secret: compared by hash only)`);
            expect(d.out).not.toMatch(/PRIVATE KEY/);
        } finally {
            must(ssh(STORE, `mv -f ${cert}.ops ${cert} && mv -f ${key}.ops ${key} && systemctl restart dovecot exim4`), "restore certificate");
        }
    });

    it("drift shows a hand-edited alias file as a unified diff and exits 1; none once it is undone", () => {
        must(ssh(RELAY, `cp -p ${ALIASES} /root/aliases.ops && echo 'hacked: attacker@example.net' >> ${ALIASES} && chmod 0666 ${ALIASES}`), "hand edit");
        try {
            const d = drift();
            expect(d.out).toContain(`file ${ALIASES}: content differs; mode 0666, expected 0644`);
            expect(d.out).toMatch(new RegExp(`--- rendered mchenry:${ALIASES}\\n +\\+\\+\\+ on host mchenry:${ALIASES}\\n[\\s\\S]*\\n +\\+hacked: attacker@example\\.net`));
            expect(d.code).toBe(1);
            console.log(d.out);
        } finally {
            must(ssh(RELAY, `mv -f /root/aliases.ops ${ALIASES}`), "undo hand edit");
        }
        const clean = drift();
        expect(clean.out).toContain("no drift on 5 host(s)");
        expect(clean.code).toBe(0);
    });

    it("security probes from outside: no open relay on any MX host, no AUTH before TLS, no plaintext IMAP, no TLS < 1.2, hostile local parts refused", () => {
        const started = Date.now();
        const p = command("status.ts", ["lab", "--probes-only"]);
        console.log(`${p.out}\nprobes took ${Date.now() - started} ms`);
        expect(p.out).toMatch(/mchenry +probe: open relay \(external -> external\) +OK +550 /);
        expect(p.out).toMatch(/lily +probe: open relay \(external -> external\) +OK/);
        expect(p.out).toMatch(/sanger +probe: AUTH before TLS :587 +OK +AUTH not advertised; 503 /);
        expect(p.out).toMatch(/sanger +probe: plaintext IMAP login :143 +OK +port 143 closed/);
        expect(p.out).toMatch(/mchenry +probe: hostile local part \.\.\/\.\.\/etc\/passwd@wikimedia\.test +OK +5\d\d /);
        expect(p.code).toBe(0);
        // the same from the lab's internet host with swaks: relaying refused by both MX hosts
        for (const mx of [RELAY, LISTS]) {
            const out = swaksFromExt(["--server", mx, "--from", "a@example.net", "--to", "b@example.org", "--quit-after", "RCPT"]).out;
            expect(out).not.toMatch(/RCPT TO:<b@example\.org>\s*\n<-\s+250/);
            if (mx === RELAY) expect(out).toMatch(/RCPT TO:<b@example\.org>\s*\n<\*\*\s+550 /);
        }
    });

    it("backup and restore round trip: a lost message and the account DB come back, readable over IMAPS", async () => {
        const t = deliverToSmoke();
        const b = must(ssh(STORE, "/usr/local/sbin/mailinfra-backup"), "backup");
        const snapshot = b.out.match(/backup (\d{8}T\d{6}Z) \(rsync-twice\) stored on lily\.lab\.test/)?.[1];
        expect(snapshot).toBeDefined();
        // on the target: the message, hard-linked snapshots, owned by the backup user only
        expect(ssh(LISTS, `grep -rl ${t} /var/backups/mailinfra/${snapshot}/vmail/wikimedia.test/smoke/ | head -n1`).out).toContain(snapshot!);
        expect(ssh(LISTS, `readlink /var/backups/mailinfra/latest`).out.trim()).toBe(snapshot);
        expect(ssh(LISTS, `stat -c '%U %a' /var/backups/mailinfra`).out.trim()).toBe("mailinfra-backup 700");
        // disaster: the message file and the smoke account are gone
        must(ssh(STORE, `grep -l ${t} /var/vmail/wikimedia.test/smoke/cur/* /var/vmail/wikimedia.test/smoke/new/* 2>/dev/null | xargs rm -f && sqlite3 /var/vmaildb/user.db "DELETE FROM account WHERE localpart='smoke'"`), "lose data");
        expect(ssh(STORE, `cat /var/vmail/wikimedia.test/smoke/cur/* /var/vmail/wikimedia.test/smoke/new/* 2>/dev/null | grep -c ${t}`).out.trim()).toBe("0");
        const started = Date.now();
        const r = command("restore.ts", ["lab"]);
        expect(r.out).toMatch(new RegExp(`restored ${snapshot} from lily\\.lab\\.test: \\d+ accounts, \\d+ messages`));
        expect(r.code).toBe(0);
        const found = await waitForMessage(STORE, SMOKE, smokePassword(), t, 30_000);
        expect(found).toBeDefined();
        console.log(`restore of ${snapshot}: ${((Date.now() - started) / 1000).toFixed(1)} s until the message was readable over IMAPS`);
        expect(ssh(STORE, `stat -c '%U:%G %a' /var/vmaildb/user.db`).out.trim()).toBe("root:vmail 640");
    });
});

describe("cold failover of the store onto spare", () => {
    let copy: string | undefined;
    let fleetChanged = false;

    afterAll(() => {
        if (!fleetChanged) return;
        // back to the original assignment: sanger up again, the program re-converges the lab stack
        run(path.join(REPO, "lab", "lab.sh"), ["up", "sanger"]);
        must(pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"]), "pulumi up (original assignment)");
        if (copy) fs.rmSync(copy, { recursive: true, force: true });
    });

    it("rebuilds the store on spare in one pulumi up that restores the latest backup: the relay never loses an account, a pre-failure message is readable over IMAPS; RTO printed", async () => {
        convergedFleet();
        const t = deliverToSmoke();
        // an account besides the smoke account: the rebuilt store must bring it back before its first push
        const probe = `failover-${crypto.randomBytes(3).toString("hex")}`;
        must(ssh(STORE, `sqlite3 /var/vmaildb/user.db "INSERT INTO account (localpart, domain, password) VALUES ('${probe}', 'wikimedia.test', '{SHA512-CRYPT}x')" && /usr/local/sbin/mailinfra-push-userdb`), "probe account");
        must(ssh(STORE, "/usr/local/sbin/mailinfra-backup"), "nightly backup before the failure");
        fleetChanged = true;
        must(run(path.join(REPO, "lab", "lab.sh"), ["reset", "spare"]), "bare spare");
        must(run(path.join(REPO, "lab", "lab.sh"), ["up", "spare"]), "spare up");

        // the failure
        must(run(path.join(REPO, "lab", "lab.sh"), ["down", "sanger"]), "sanger dies");
        const dead = Date.now();

        // docs/failover.md, step by step: point the role at spare in stack config ...
        copy = projectCopy();
        const stackFile = path.join(copy, "Pulumi.lab.yaml");
        const doc = yaml.load(fs.readFileSync(stackFile, "utf8")) as { config: Record<string, any> };
        delete doc.config["mailinfra:hosts"].sanger;
        doc.config["mailinfra:hosts"].spare = { address: SPARE, role: "imap" };
        fs.writeFileSync(stackFile, yaml.dump(doc, { lineWidth: -1 }));
        // ... forget the dead host, converge (which restores the latest backup onto the empty store)
        must(command("forget-host.ts", ["lab", "sanger"], copy), "forget sanger");
        const up = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"], { cwd: copy });
        console.log(up.out.slice(-3000));
        expect(up.code).toBe(0);
        const converged = Date.now();
        // the converge restored the backup: the probe account is in the new store's DB
        expect(ssh(SPARE, `sqlite3 /var/vmaildb/user.db "SELECT localpart FROM account WHERE localpart = '${probe}'"`).out.trim()).toBe(probe);
        // the relay routes the restored account to spare right after the converge (no 550 window)
        expect(ssh(RELAY, `exim4 -bt ${probe}@wikimedia.test`).out).toMatch(/router = imap, transport = store_smtp\n\s+host spare\.lab\.test/);
        expect(swaksFromExt(["--server", RELAY, "--quit-after", "RCPT", "--from", "sender@example.net", "--to", `${probe}@wikimedia.test`]).out).toMatch(/RCPT TO:<failover-[0-9a-f]+@wikimedia\.test>\s*\n\s*<-\s+250 /);
        const found = await waitForMessage(SPARE, SMOKE, smokePassword(), t, 60_000);
        const readable = Date.now();
        expect(found).toBeDefined();

        // routing and DNS followed the role
        expect(ssh(RELAY, "exim4 -bt smoke@wikimedia.test").out).toMatch(/router = imap, transport = store_smtp\n\s+host spare\.lab\.test \[198\.51\.100\.16\]/);
        const labDns = new dns.promises.Resolver();
        labDns.setServers(["198.51.100.1"]);
        expect(await labDns.resolve4("spare.lab.test")).toEqual([SPARE]);
        // new mail after the failover lands on spare
        deliverToSmoke(SPARE);
        const rto = (readable - dead) / 1000;
        console.log(`RTO: ${rto.toFixed(1)} s from "sanger dead" to "pre-failure message readable on spare" (pulumi up incl. restore ${((converged - dead) / 1000).toFixed(1)} s, first IMAPS read ${((readable - converged) / 1000).toFixed(1)} s)`);
        fs.mkdirSync(path.join(REPO, "bench"), { recursive: true });
        fs.writeFileSync(path.join(REPO, "bench", "failover-last.json"), JSON.stringify({ at: new Date().toISOString(), rtoSeconds: rto, upSeconds: (converged - dead) / 1000, restoreSeconds: (readable - converged) / 1000 }, null, 2));
    });
});
