// The relay (seed: mchenry) on real daemons: routing of every router, spam policy, relaying policy,
// the bulk interface, and hostile addresses. Mail is sent from the lab's "internet" host ext.
import * as crypto from "crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { convergedLab, eximRoute, FLEET, pulumi, ssh, swaksFromExt, waitFor } from "./harness";

const RELAY = "198.51.100.11";
const STORE = "198.51.100.12";
const EXT = "198.51.100.20";
const WIKI_IP = "198.51.100.31";

const tag = () => `t${crypto.randomBytes(6).toString("hex")}`;

/** The smoke account's Maildir on the store holds a message with this token (returns its text). */
function inSmokeMaildir(token: string): string | undefined {
    let text: string | undefined;
    waitFor(() => {
        const r = ssh(STORE, `f=$(grep -rl ${token} /var/vmail/wikimedia.test/smoke/ 2>/dev/null | head -n1); [ -n "$f" ] && cat "$f"`);
        if (r.code === 0 && r.out.includes(token)) text = r.out;
        return text !== undefined;
    }, 60_000);
    return text;
}

function inSink(token: string, recipient: string): string | undefined {
    let text: string | undefined;
    waitFor(() => {
        const r = ssh(EXT, `f=$(grep -rl ${token} /var/mail/sink/${recipient}/ 2>/dev/null | head -n1); [ -n "$f" ] && cat "$f"`);
        if (r.code === 0 && r.out.includes(token)) text = r.out;
        return text !== undefined;
    }, 60_000);
    return text;
}

function headerBlock(message: string): string {
    return message.split(/\r?\n\r?\n/)[0];
}

describe("relay", () => {
    beforeAll(() => convergedLab(FLEET));

    // address → what `exim -bt` on the relay must say (router, then target host or outcome)
    const table: [string, RegExp][] = [
        ["smoke@wikimedia.test", /router = imap, transport = store_smtp\n\s+host sanger\.lab\.test/],
        ["smoke+folder@wikimedia.test", /router = imap, transport = store_smtp\n\s+host sanger\.lab\.test/],
        ["SMOKE@WikiMedia.test", /router = imap/],
        ["noc@wikimedia.test", /smoke@wikimedia\.test\n\s+<-- noc@wikimedia\.test\n\s+router = imap/],
        ["abuse@wikimedia.test", /<-- noc@wikimedia\.test\n\s+<-- abuse@wikimedia\.test\n\s+router = imap/],
        ["dead@wikimedia.test", /dead@wikimedia\.test is undeliverable: this address is no longer in use$/m],
        ["moving@wikimedia.test", /moving@wikimedia\.test cannot be resolved at this time: mailbox is being moved$/m],
        ["archive@wikimedia.test", /-> \|\/usr\/bin\/logger -t mailinfra-archive\n\s+transport = address_pipe/],
        ["anything@wikiquote.test", /<-- anything@wikiquote\.test\n\s+router = imap/],
        ["quotes@wikiquote.test", /<-- editor@wikiquote\.test\n\s+<-- quotes@wikiquote\.test/],
        ["wikien-l@wikipedia.test", /wikien-l@lists\.wikimedia\.test\n\s+<-- wikien-l@wikipedia\.test\n\s+router = dnslookup.*\n\s+host lily\.lab\.test/],
        ["wikien-l-request@wikipedia.test", /wikien-l-request@lists\.wikimedia\.test\n\s+<-- wikien-l-request@wikipedia\.test/],
        ["foundation-l-bounces+a=b.example@wikipedia.test", /foundation-l-bounces\+a=b\.example@lists\.wikimedia\.test/],
        ["wikien-l-unsubscribe@wikipedia.test", /wikien-l-unsubscribe@lists\.wikimedia\.test/],
        ["alice@wikimedia.test", /router = ldap_account, transport = remote_smtp\n\s+host aspmx\.google\.test/],
        ["alice+news@wikimedia.test", /alice\+news@wikimedia\.test\n\s+router = ldap_account/],
        ["bobby@wikimedia.test", /bob@wikimedia\.test\n\s+<-- bobby@wikimedia\.test\n\s+router = ldap_account/],
        ["carol@wikimedia.test", /carol@wikimedia\.test is undeliverable: Address carol@wikimedia\.test does not exist/],
        ["general@rt.wikimedia.test", /router = rt, transport = remote_smtp\n\s+host streber\.lab\.test/],
        ["general-comment@rt.wikimedia.test", /router = rt/],
        ["otrs-test@wikimedia.test", /router = otrs, transport = remote_smtp\n\s+host otrs\.lab\.test/],
        ["info@wikipedia.test", /router = otrs/],
        ["old-queue@wikimedia.test", /is undeliverable: Address old-queue@wikimedia\.test does not exist/],
        ["postmaster@wikipedia.test", /<-- noc@wikimedia\.test\n\s+<-- postmaster@wikipedia\.test\n\s+router = imap/],
        ["nobody-here@wikimedia.test", /is undeliverable: Address nobody-here@wikimedia\.test does not exist/],
        ["someone@example.net", /router = dnslookup, transport = remote_smtp\n\s+host mx\.example\.net/],
        ["Someone@Example.ORG", /router = dnslookup/],
    ];
    it.each(table)("routes %s as the seed says (exim -bt)", (address, expected) => {
        expect(eximRoute(address, RELAY)).toMatch(expected);
    });

    it("delivers real mail from the internet to an IMAP account, a Google account and an alias of one", () => {
        const t = tag();
        for (const to of ["smoke@wikimedia.test", "alice@wikimedia.test", "bobby@wikimedia.test"])
            expect(swaksFromExt(["--server", RELAY, "--from", "sender@example.net", "--to", to, "--header", `Subject: ${t}`]).out).toMatch(/<[-~]\s+250 /);
        expect(inSmokeMaildir(t)).toBeDefined();
        expect(inSink(t, "alice@wikimedia.test")).toBeDefined();
        expect(inSink(t, "bob@wikimedia.test")).toBeDefined();
    });

    it("delivers OTRS queue and RT mail to their hosts", () => {
        const t = tag();
        for (const to of ["otrs-test@wikimedia.test", "general@rt.wikimedia.test"])
            expect(swaksFromExt(["--server", RELAY, "--from", "sender@example.net", "--to", to, "--header", `Subject: ${t}`]).out).toMatch(/<[-~]\s+250 /);
        // a Znuny ticket on the OTRS host, an RT ticket on streber (test/lab/tickets.test.ts covers both in depth)
        expect(waitFor(() => ssh("198.51.100.14", `mariadb -N otrs -e "SELECT id FROM ticket WHERE title='${t}'" | grep -q .`).code === 0, 90_000)).toBe(true);
        expect(waitFor(() => ssh("198.51.100.15", `sqlite3 /var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb "SELECT id FROM Tickets WHERE Subject='${t}'" | grep -q .`).code === 0, 90_000)).toBe(true);
    });

    it("makes a new OTRS queue address work at once, without pulumi up", () => {
        const address = `queue-${tag()}@wikimedia.test`;
        expect(eximRoute(address, RELAY)).toMatch(/does not exist/);
        ssh("198.51.100.14", `mariadb otrs -e "INSERT INTO system_address (value0, value1, queue_id, valid_id, create_time, create_by, change_time, change_by) VALUES ('${address}', 'new queue', 1, 1, NOW(), 1, NOW(), 1)"`);
        expect(eximRoute(address, RELAY)).toMatch(/router = otrs/);
    });

    it("rejects unknown recipients and :fail: aliases at RCPT with 5xx", () => {
        expect(swaksFromExt(["--server", RELAY, "--to", "nobody-here@wikimedia.test", "--quit-after", "RCPT"]).out).toMatch(/<\*\* 550 Address nobody-here@wikimedia\.test does not exist/);
        expect(swaksFromExt(["--server", RELAY, "--to", "dead@wikimedia.test", "--quit-after", "RCPT"]).out).toMatch(/<\*\* 550 .*no longer in use/);
        expect(swaksFromExt(["--server", RELAY, "--to", "moving@wikimedia.test", "--quit-after", "RCPT"]).out).toMatch(/<\*\* 451 /);
    });

    it("is no open relay for outside networks", () => {
        expect(swaksFromExt(["--server", RELAY, "--from", "spam@example.net", "--to", "victim@example.org", "--quit-after", "RCPT"]).out).toMatch(/<\*\* 550 relay not permitted/);
    });

    it.each([["o'brien"], ["..%2Fetc"], ["a/../b"], ["${run{/bin/true}}"], ["a|b"], ["a".repeat(100)], [".hidden"]])(
        "refuses the hostile local part %s at RCPT by its characters",
        (local) => {
            expect(swaksFromExt(["--server", RELAY, "--to", `${local}@wikimedia.test`, "--quit-after", "RCPT"]).out).toMatch(/<\*\* 550 Restricted characters in address/);
        },
    );

    it.each([["x;reboot"], ["a\\b"], ["a b"]])("refuses the malformed local part %s at RCPT with 5xx", (local) => {
        expect(swaksFromExt(["--server", RELAY, "--to", `${local}@wikimedia.test`, "--quit-after", "RCPT"]).out).toMatch(/<\*\* 5\d\d /);
    });

    it("quotes lookups: a local part with LDAP and SQL metacharacters matches nothing and leaks nothing", () => {
        const out = eximRoute("a*)(mail=*@wikimedia.test", RELAY) + eximRoute("x' OR '1'='1@wikimedia.test", RELAY);
        expect(out).not.toMatch(/router = (ldap_account|imap|otrs)/);
        expect(ssh(RELAY, "cat /var/log/exim4/paniclog 2>/dev/null || true").out).not.toMatch(/pass=/);
    });

    it("rejects GTUBE at SMTP time", () => {
        const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
        const r = swaksFromExt(["--server", RELAY, "--to", "smoke@wikimedia.test", "--body", gtube]);
        expect(r.out).toMatch(/<\*\* 550 This message scored [0-9.]+ spam points\./);
    });

    it("delivers a message scoring between 1 and 12 with our X-Spam-Score/Report headers, and strips forged ones", () => {
        const t = tag();
        const r = swaksFromExt(["--server", RELAY, "--to", "smoke@wikimedia.test", "--header", `Subject: mailinfra-spam-test ${t}`, "--add-header", "X-Spam-Score: -100 (forged)", "--add-header", "X-Spam-Status: No, forged"]);
        expect(r.out).toMatch(/<[-~]\s+250 /);
        const headers = headerBlock(inSmokeMaildir(t) ?? "");
        expect(headers).toMatch(/^X-Spam-Score: -?[0-9.]+ \(\+*\)$/m);
        expect(headers).toMatch(/^X-Spam-Report: /m);
        expect(headers).toMatch(/MAILINFRA_LAB_SPAMMY/);
        expect(headers).not.toMatch(/forged/);
    });

    it("replaces forged spam headers of an ordinary message with only ours", () => {
        const t = tag();
        swaksFromExt(["--server", RELAY, "--to", "smoke@wikimedia.test", "--header", `Subject: ordinary ${t}`, "--add-header", "X-Spam-Score: 0.0 (forged)", "--add-header", "X-Spam-Flag: NO"]);
        const headers = headerBlock(inSmokeMaildir(t) ?? "");
        expect(headers).toContain(t);
        expect(headers).not.toMatch(/forged|X-Spam-Flag/);
        // below 1 point: no header at all; from 1 point on: ours, with the score
        for (const line of headers.split("\n").filter((l) => l.startsWith("X-Spam-Score:"))) expect(line).toMatch(/^X-Spam-Score: -?[0-9.]+ \(\+*\)$/);
    });

    it("does not scan mail from own networks (GTUBE from the store passes, unmarked)", () => {
        const t = tag();
        const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";
        ssh(STORE, `printf 'Subject: own-net ${t}\\n\\n${gtube}\\n' | /usr/sbin/exim4 -f ops@wikimedia.test someone@example.net`);
        const msg = inSink(t, "someone@example.net");
        expect(msg).toBeDefined();
        expect(headerBlock(msg!)).not.toMatch(/^X-Spam-/m);
        expect(headerBlock(msg!)).toMatch(/by mchenry\.lab\.test/);
    });

    it("refuses the bulk interface to outside hosts", () => {
        expect(swaksFromExt(["--server", WIKI_IP, "--to", "someone@example.net", "--quit-after", "RCPT"]).out).toMatch(/<\*\* 550 the bulk mail interface is for internal hosts only/);
    });

    it("sends wiki mail from the bulk address with its own HELO and sender", () => {
        const t = tag();
        const dialogue = [
            "EHLO appserver.lab.test",
            "MAIL FROM:<wiki@wikimedia.test>",
            "RCPT TO:<reader@example.net>",
            "DATA",
            "X-Mailer: MediaWiki mailer",
            `Subject: password reminder ${t}`,
            "",
            "wiki body",
            ".",
            "QUIT",
            "",
        ].join("\r\n");
        // an SMTP session as if from an internal host to the bulk interface
        expect(ssh(RELAY, `printf '${dialogue.replace(/\r\n/g, "\\r\\n")}' | exim4 -bs -oMa 198.51.100.12 -oMi ${WIKI_IP} | grep -c '^250'`).code).toBe(0);
        expect(inSink(t, "reader@example.net")).toBeDefined();
        const log = ssh(EXT, `grep -h 'H=(wiki-mail.lab.test) \\[${WIKI_IP}\\]' /var/log/exim4/mainlog | tail -n 3`).out;
        expect(log).toMatch(/<= wiki@wikimedia\.test H=\(wiki-mail\.lab\.test\) \[198\.51\.100\.31\]/);
    });

    it("rewrites the envelope sender of internal hosts", () => {
        const t = tag();
        ssh(RELAY, `printf 'Subject: cron ${t}\\n\\nbody\\n' | exim4 -f cron@db1.pmtpa.wmnet ops-alerts@example.net`);
        const msg = inSink(t, "ops-alerts@example.net");
        expect(msg).toMatch(/^Return-path: <root@wikimedia\.test>$/im);
    });

    it("runs spamd as its own user on loopback, the scan dir on tmpfs, and the local resolver", () => {
        // the scanning children run as debian-spamd (the parent only forks them)
        expect(ssh(RELAY, "ps -eo user:20,args | awk '/spamd child/ && !/awk/ {print $1}' | sort -u").out.trim()).toBe("debian-spamd");
        expect(ssh(RELAY, "ss -ltnH 'sport = :783' | awk '{print $4}'").out.trim()).toBe("127.0.0.1:783");
        expect(ssh(RELAY, "findmnt -n -o FSTYPE /var/spool/exim4/scan").out.trim()).toBe("tmpfs");
        expect(ssh(RELAY, "getent hosts sanger.lab.test").out).toContain("198.51.100.12");
        expect(ssh(RELAY, "systemctl is-enabled spamassassin-maintenance.timer").out.trim()).toBe("enabled");
    });

    it("serves the managed certificate on 465 (TLS on connect) and on IMAPS, and offers STARTTLS on 25", () => {
        const subject = (target: string) => ssh(EXT, `openssl s_client -connect ${target} </dev/null 2>/dev/null | openssl x509 -noout -subject`).out;
        expect(subject(`${RELAY}:465`)).toMatch(/CN ?= ?mail\.lab\.test/);
        expect(subject(`${STORE}:993`)).toMatch(/CN ?= ?mail\.lab\.test/);
        expect(swaksFromExt(["--server", RELAY, "--quit-after", "EHLO"]).out).toMatch(/250-STARTTLS/);
        // TLS 1.1 is not offered
        expect(ssh(EXT, `openssl s_client -connect ${RELAY}:465 -tls1_1 </dev/null 2>&1 | grep -c 'BEGIN CERTIFICATE' || true`).out.trim()).toBe("0");
    });

    it("is idempotent: a second preview reports no changes", () => {
        expect(pulumi(["preview", "--stack", "lab", "--expect-no-changes"]).code).toBe(0);
    });
});
