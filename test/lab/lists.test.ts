// The lists host / secondary MX (seed: lily) on real daemons: Mailman 3 list mail from the lab's "internet"
// host ext to the members and the archive, recipient callouts to the primary relay, queueing while the relay
// is down (and nothing lost after), and @mx_secondary relaying only for allowed primaries.
import * as crypto from "crypto";
import * as fs from "fs";
import * as path from "path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { convergedLab, eximRoute, FLEET, must, pulumi, REPO, run, ssh, swaksFromExt, waitFor } from "./harness";
import { stackConfig } from "../unit/stackConfig";

const RELAY = "198.51.100.11";
const STORE = "198.51.100.12";
const LILY = "198.51.100.13";
const EXT = "198.51.100.20";
const LAB_DNS = "198.51.100.1";
const ARCHIVE = "/var/lib/mailman3/archives/prototype";

/** Where list mail may have stopped, for failure messages. */
const lilyLogs = () => ssh(LILY, "tail -n 25 /var/log/exim4/mainlog; tail -n 15 /var/log/mailman3/mailman.log; exim4 -bp | head -n 20").out;

const tag = () => `t${crypto.randomBytes(6).toString("hex")}`;

/** Files under dir (on host) whose text contains token, waiting up to timeoutMs for at least `want` of them. */
function countWithToken(host: string, dir: string, token: string, want = 1, timeoutMs = 60_000): number {
    let n = 0;
    waitFor(() => {
        const r = ssh(host, `grep -rlF ${token} ${dir} 2>/dev/null | wc -l`);
        n = parseInt(r.out.trim(), 10) || 0;
        return n >= want;
    }, timeoutMs);
    return n;
}

function firstWithToken(host: string, dir: string, token: string): string {
    return ssh(host, `f=$(grep -rlF ${token} ${dir} 2>/dev/null | head -n1); [ -n "$f" ] && cat "$f"`).out;
}

const sink = (rcpt: string) => `/var/mail/sink/${rcpt}/`;
const SMOKE_MAILDIR = "/var/vmail/wikimedia.test/smoke/";

/** swaks from ext to lily that stops after RCPT: the transcript, with lily's answer to RCPT in it. */
function rcptAtLily(to: string): string {
    return swaksFromExt(["--server", LILY, "--from", "sender@example.net", "--to", to, "--quit-after", "RCPT"]).out;
}

describe("lists host / secondary MX (lily)", () => {
    beforeAll(() => convergedLab(FLEET));

    it("is in the lab DNS: MX 10 relay and 50 lily for the mail domains, MX 10 lily for the lists domain", () => {
        const mx = (d: string) => ssh(EXT, `dig +short MX ${d} @${LAB_DNS} | sort`).out.trim();
        for (const d of ["wikimedia.test", "wikipedia.test", "rt.wikimedia.test"]) expect(mx(d)).toBe("10 mchenry.lab.test.\n50 lily.lab.test.");
        expect(mx("lists.wikimedia.test")).toBe("10 lily.lab.test.");
    });

    it("delivers a member's post from the internet to every list member and into the list's archive", () => {
        const t = tag();
        const sent = swaksFromExt(["--server", LILY, "--from", "alice@example.net", "--to", "wikien-l@lists.wikimedia.test", "--header", `Subject: post ${t}`]);
        expect(sent.out).toMatch(/<-\s+250 OK id=/);
        for (const member of ["alice@example.net", "bob@example.org"]) if (countWithToken(EXT, sink(member), t) !== 1) expect.fail(`no copy for ${member}; lily:\n${lilyLogs()}`);
        const copy = firstWithToken(EXT, sink("bob@example.org"), t);
        expect(copy).toMatch(/^List-Id: <wikien-l\.lists\.wikimedia\.test>/m);
        expect(copy).toMatch(/^Subject: \[Wikien-l\] post t/m);
        // a non-member is not on the list: nothing for carol
        expect(ssh(EXT, `grep -rlF ${t} ${sink("carol@example.net")} 2>/dev/null | wc -l`).out.trim()).toBe("0");
        expect(countWithToken(LILY, `${ARCHIVE}/wikien-l@lists.wikimedia.test/new/`, t)).toBe(1);
    });

    it("delivers mail to a legacy list address (relay rewrite) to the list on lily", () => {
        const t = tag();
        const sent = swaksFromExt(["--server", RELAY, "--from", "carol@example.net", "--to", "foundation-l@wikipedia.test", "--header", `Subject: legacy ${t}`]);
        expect(sent.out).toMatch(/<-\s+250 OK id=/);
        if (countWithToken(EXT, sink("carol@example.net"), t) !== 1) expect.fail(`no copy for carol@example.net; lily:\n${lilyLogs()}`);
        const copy = firstWithToken(EXT, sink("carol@example.net"), t);
        // the post itself (not a "held for moderation" notice that quotes its subject)
        expect(copy).toMatch(/^List-Id: <foundation-l\.lists\.wikimedia\.test>/m);
        expect(copy).toMatch(/^Subject: \[Foundation-l\] legacy t/m);
        expect(countWithToken(LILY, `${ARCHIVE}/foundation-l@lists.wikimedia.test/new/`, t)).toBe(1);
    });

    it("rejects an address on the lists domain that is no list at RCPT, and accepts the list's -request address", () => {
        expect(rcptAtLily(`nolist-${tag()}@lists.wikimedia.test`)).toMatch(/<\*\*\s+550 Address nolist-t[0-9a-f]+@lists\.wikimedia\.test does not exist/);
        expect(rcptAtLily("wikien-l-request@lists.wikimedia.test")).toMatch(/RCPT TO:<wikien-l-request@lists\.wikimedia\.test>\s*\n<-\s+250 Accepted/);
    });

    it("with the relay up, rejects an unknown recipient at RCPT by callout (550) and accepts a known one", () => {
        const unknown = `nobody-${tag()}@wikimedia.test`;
        const r = rcptAtLily(unknown);
        expect(r).toMatch(/<\*\*\s+550[- ].*[Cc]allout verification failed/);
        expect(r).toMatch(/does not exist/);
        expect(rcptAtLily("smoke@wikimedia.test")).toMatch(/RCPT TO:<smoke@wikimedia\.test>\s*\n<-\s+250 Accepted/);
    });

    it("with the relay's Exim stopped, accepts and queues 25 messages, and delivers all 25 once the relay is back (0 lost)", () => {
        const N = 25;
        const t = tag();
        must(ssh(RELAY, "systemctl stop exim4"), "stopping the relay's Exim");
        let accepted = 0;
        try {
            // recipients the callout cache has not seen (+suffix of the smoke account): defer_ok must accept them
            const script = `for i in $(seq 1 ${N}); do swaks --timeout 60 --hide-informational --server ${LILY} --from sender@example.net --to smoke+${t}-$i@wikimedia.test --header "Subject: queued ${t} $i" 2>&1 | grep -c '<-  *250 OK id=' ; done`;
            const r = ssh(EXT, script);
            accepted = r.out.split("\n").filter((l) => l.trim() === "1").length;
            expect(accepted, r.out).toBe(N);
            const queued = ssh(LILY, `grep -lF ${t} /var/spool/exim4/input/*-H 2>/dev/null | wc -l`).out.trim();
            expect(Number(queued)).toBe(N);
            expect(countWithToken(STORE, SMOKE_MAILDIR, t, 1, 2000)).toBe(0);
        } finally {
            must(ssh(RELAY, "systemctl start exim4"), "starting the relay's Exim");
        }
        must(ssh(LILY, "exim4 -qff"), "queue run on lily");
        const delivered = countWithToken(STORE, SMOKE_MAILDIR, t, N, 120_000);
        expect(delivered, `delivered ${delivered} of ${N}`).toBe(N);
        expect(ssh(LILY, `grep -lF ${t} /var/spool/exim4/input/*-H 2>/dev/null | wc -l`).out.trim()).toBe("0");
    });

    describe("@mx_secondary domains (lab DNS records added for this test)", () => {
        const dnsFile = path.join(process.env.LAB_RUN ?? "/var/tmp/mailinfra-lab", "dns", "60-lists-test.conf");
        beforeAll(() => {
            // rogue.test names lily as backup of a primary that is not ours; friendly.test of our relay
            const zone = (d: string, primary: string) => [
                `  local-zone: "${d}." static`,
                `  local-data: "${d}. 300 IN SOA ns.lab.test. hostmaster.lab.test. 1 3600 600 86400 60"`,
                `  local-data: "${d}. 300 IN MX 10 ${primary}."`,
                `  local-data: "${d}. 300 IN MX 50 lily.lab.test."`,
            ];
            fs.writeFileSync(dnsFile, ["# lists.test.ts: temporary", "server:", ...zone("rogue.test", "mx.example.net"), ...zone("friendly.test", "mchenry.lab.test"), ""].join("\n"));
            must(run(path.join(REPO, "lab", "lab.sh"), ["dns-reload"]), "lab dns-reload");
        });
        afterAll(() => {
            fs.rmSync(dnsFile, { force: true });
            run(path.join(REPO, "lab", "lab.sh"), ["dns-reload"]);
        });

        it("refuses to relay for a domain whose primary MX is not in the allowed list", () => {
            // ignore_target_hosts = ! +primary_mx drops mx.example.net; with no host left, Exim 4.96 fails the
            // address with its own text (the router's cannot_route_message is not used for this case)
            expect(eximRoute("someone@rogue.test", LILY)).toMatch(/someone@rogue\.test is undeliverable: all relevant MX records point to non-existent hosts/);
            expect(rcptAtLily("someone@rogue.test")).toMatch(/<\*\*\s+550 all relevant MX records point to non-existent hosts/);
        });

        it("relays for a domain whose primary MX is the relay, to the relay only", () => {
            expect(eximRoute("someone@friendly.test", LILY)).toMatch(/router = secondary, transport = remote_smtp\n\s+host mchenry\.lab\.test/);
            expect(rcptAtLily("someone@friendly.test")).toMatch(/RCPT TO:<someone@friendly\.test>\s*\n<-\s+250 Accepted/);
        });
    });

    describe("Mailman web UI (Postorius + HyperKitty behind nginx)", () => {
        const WEB = "lily.lab.test";
        const CA = "/tmp/mailinfra-lab-ca.pem";
        /** curl on ext against lily by name, verifying lily's certificate against the lab's (self-signed) one. */
        const curlFromExt = (args: string) => ssh(EXT, `curl -sS --max-time 20 --cacert ${CA} --resolve ${WEB}:443:${LILY} --resolve ${WEB}:80:${LILY} ${args}`);
        const webLogs = () => ssh(LILY, "tail -n 20 /var/log/mailman3/mailman.log; tail -n 20 /var/log/mailman3/web/mailman-web.log | grep -v '^\\[pid'; tail -n 5 /var/log/nginx/error.log").out;

        beforeAll(() => {
            must(run("ssh", ["-F", path.join("/var/cache/mailinfra/lab", "ssh_config"), EXT, `cat > ${CA}`], { input: (stackConfig("lab") as any).tls.certificate }), "lab certificate to ext");
        });

        it("serves Postorius over HTTPS with the managed certificate, listing the configured lists", () => {
            const r = curlFromExt(`-w '\\nHTTP %{http_code}' https://${WEB}/mailman3/postorius/lists/`);
            expect(r.code, r.out.slice(-2000)).toBe(0);
            expect(r.out).toMatch(/HTTP 200$/);
            for (const l of ["wikien-l", "foundation-l"]) expect(r.out).toContain(`${l}@lists.wikimedia.test`);
        });

        it("redirects plain HTTP to the same URL over HTTPS", () => {
            const r = curlFromExt(`-o /dev/null -w '%{http_code} %{redirect_url}' http://${WEB}/mailman3/postorius/lists/`);
            expect(r.out.trim()).toBe(`301 https://${WEB}/mailman3/postorius/lists/`);
        });

        it("archives a member's post in HyperKitty: it shows in the list's archive API and thread page", () => {
            const t = tag();
            const start = Date.now();
            const sent = swaksFromExt(["--server", LILY, "--from", "alice@example.net", "--to", "wikien-l@lists.wikimedia.test", "--header", `Subject: archived ${t}`, "--body", `body ${t}`]);
            expect(sent.out).toMatch(/<-\s+250 OK id=/);
            const api = `https://${WEB}/mailman3/hyperkitty/api/list/wikien-l@lists.wikimedia.test/emails/`;
            let emails = "";
            const found = waitFor(() => {
                emails = curlFromExt(api).out;
                return emails.includes(t);
            }, 90_000, 2000);
            if (!found) expect.fail(`post ${t} not in HyperKitty after 90 s; API said ${emails.slice(0, 400)}\nlily:\n${webLogs()}`);
            console.log(`HyperKitty: post visible in the archive API ${((Date.now() - start) / 1000).toFixed(1)} s after lily accepted it`);
            const email = (JSON.parse(emails) as any[]).find((e) => e.subject.includes(t));
            expect(email.subject).toBe(`[Wikien-l] archived ${t}`);
            // the archive page of the thread, as a reader sees it
            const page = curlFromExt(`https://${WEB}/mailman3/hyperkitty/list/wikien-l@lists.wikimedia.test/thread/${email.message_id_hash}/`);
            expect(page.out).toContain(`archived ${t}`);
        });

        it("keeps Mailman's REST API on loopback: refused from ext, answering (401 without credentials) on lily", () => {
            const outside = ssh(EXT, `curl -sS --max-time 5 -o /dev/null http://${LILY}:8001/3.1/system`);
            expect(outside.code).not.toBe(0);
            // dropped by the firewall (a timeout) before it could be refused
            expect(outside.out).toMatch(/Failed to connect|Connection refused|Couldn't connect|timed out|Timeout was reached/);
            expect(ssh(LILY, "ss -ltnH 'sport = :8001' | awk '{print $4}'").out.trim().split("\n")).toEqual(["127.0.0.1:8001"]);
            const inside = ssh(LILY, `python3 -c 'import urllib.request, urllib.error
try: urllib.request.urlopen("http://127.0.0.1:8001/3.1/system")
except urllib.error.HTTPError as e: print(e.code)'`);
            expect(inside.out.trim()).toBe("401");
        });

        it("runs Debian's mailman3-web (uwsgi with its qcluster) and nginx, enabled, with Debian's cron jobs and private settings", () => {
            const r = ssh(LILY, "systemctl is-enabled mailman3-web nginx mailman3; systemctl is-active mailman3-web nginx mailman3; ps -eo args | grep -c '^python3 manage.py qcluster$'; grep -c 'manage.py runjobs' /etc/cron.d/mailman3-web; stat -c '%U:%G %a' /etc/mailman3/mailman-web.py /etc/mailman3/mailman-hyperkitty.cfg /etc/mailman3/mailman.cfg");
            const [en1, en2, en3, a1, a2, a3, qcluster, cron, ...modes] = r.out.trim().split("\n");
            expect([en1, en2, en3, a1, a2, a3]).toEqual(["enabled", "enabled", "enabled", "active", "active", "active"]);
            expect(parseInt(qcluster, 10)).toBeGreaterThan(0);
            expect(cron).toBe("7");
            expect(modes).toEqual(["root:www-data 640", "root:list 640", "root:list 640"]);
        });

        it("runs HyperKitty's cron jobs silently, so cron mails nobody every minute", () => {
            // the minutely and hourly lines of Debian's /etc/cron.d/mailman3-web, as cron runs them (any output = a mail)
            const r = ssh(LILY, "cd / && for j in minutely hourly; do runuser -u www-data -- /usr/share/mailman3-web/manage.py runjobs $j 2>&1; echo \"$j exit $?\"; done");
            expect(r.out.trim()).toBe("minutely exit 0\nhourly exit 0");
        });
    });

    it("is idempotent: a second pulumi up changes nothing", () => {
        const r = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"]);
        expect(r.code, r.out.slice(-3000)).toBe(0);
        expect(r.out).toMatch(/Resources:\s*\n\s+\d+ unchanged/);
    });
});
