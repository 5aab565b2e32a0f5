// The IMAP store (seed: sanger) on real daemons: delivery, +tag, IMAPS, TLS-only logins, submission via the
// relay, Maildir++ quota, user filters, user-left replies, vacation and old password hashes. Mail comes from the
// lab's "internet" host ext through the relay mchenry; accounts are written with sqlite3 and pushed with the
// store's own push script, as the admin tool does.
import * as crypto from "crypto";
import * as path from "path";
import { ImapFlow } from "imapflow";
import { beforeAll, describe, expect, it } from "vitest";
import { convergedLab, FLEET, LAB_CACHE, must, pulumi, run, ssh, swaksFromExt, waitFor } from "./harness";

const RELAY = "198.51.100.11";
const STORE = "198.51.100.12";
const EXT = "198.51.100.20";
const DOMAIN = "wikimedia.test";
const PASSWORD = `st-${crypto.randomBytes(8).toString("hex")}`;
const OLD_PASSWORD = "old-ssha-secret";

const tag = () => `t${crypto.randomBytes(6).toString("hex")}`;
const home = (local: string) => `/var/vmail/${DOMAIN}/${local}`;

/** ssh with data on stdin (SQL, passwords: never on a command line). */
function sshIn(address: string, command: string, input: string) {
    return run("ssh", ["-F", path.join(LAB_CACHE, "ssh_config"), address, command], { input });
}

/** {SSHA}: salted SHA-1 as written by the seed's wmfmailadmin. */
function sshaHash(password: string): string {
    const salt = crypto.randomBytes(4);
    return `{SSHA}${Buffer.concat([crypto.createHash("sha1").update(password).update(salt).digest(), salt]).toString("base64")}`;
}

const sql = (s: string) => `'${s.replace(/'/g, "''")}'`;

// test accounts: name → quota KB, active, filter (NULL = the default filter)
const ACCOUNTS: { local: string; quota?: number; active?: number; filter?: string; hash?: string }[] = [
    { local: "st-plain" },
    { local: "st-quota", quota: 100 },
    { local: "st-sorter", filter: '# Exim filter\nif $h_X-Mailinfra-Project: contains "apollo" then\n  save .Projects/\nendif\n' },
    { local: "st-pipe", filter: '# Exim filter\npipe "/usr/bin/touch /tmp/mailinfra-filter-pwned"\n' },
    { local: "st-dotdot", filter: "# Exim filter\nsave ../st-plain/.Stolen/\n" },
    { local: "st-left", active: 0 },
    {
        local: "st-vacation",
        filter: '# Exim filter\nif personal then\n  mail to $reply_address subject "Out of office: $h_subject:" text "I am away until Monday." once .vacation.db once_repeat 7d\nendif\n',
    },
    { local: "st-old", hash: sshaHash(OLD_PASSWORD) },
];

/** The first file under `dir` (on the store) that contains `token`, as text. */
function fileWith(host: string, dir: string, token: string, timeoutMs = 60_000): string | undefined {
    let text: string | undefined;
    waitFor(() => {
        const r = ssh(host, `f=$(grep -rlF '${token}' ${dir} 2>/dev/null | head -n1); [ -n "$f" ] && cat "$f"`);
        if (r.code === 0 && r.out.includes(token)) text = r.out;
        return text !== undefined;
    }, timeoutMs);
    return text;
}

// messages only (new/ and cur/ of any folder): Dovecot's index cache also holds header text
const countFilesWith = (host: string, dir: string, token: string) =>
    Number(ssh(host, `find ${dir} -type f \\( -path '*/new/*' -o -path '*/cur/*' \\) -exec grep -lF '${token}' {} + 2>/dev/null | wc -l`).out.trim());

function sendFromExt(to: string, subject: string, extra: string[] = []) {
    const r = swaksFromExt(["--server", RELAY, "--from", "sender@example.net", "--to", to, "--header", `Subject: ${subject}`, ...extra]);
    expect(r.out).toMatch(/<[-~]\s+250 /);
    return r;
}

/** IMAP QUOTA storage in use, KB (imapflow reports bytes as "usage"; its typings say "used"). */
function usedKb(quota: unknown): number {
    const storage = (quota as { storage?: { usage?: number; used?: number } } | undefined)?.storage;
    return (storage?.usage ?? storage?.used ?? NaN) / 1024;
}

function imap(user: string, pass: string): ImapFlow {
    return new ImapFlow({ host: STORE, port: 993, secure: true, auth: { user, pass }, logger: false, tls: { rejectUnauthorized: false } });
}

/** A raw SMTP dialogue without TLS (from ext unless told): what a client sees before STARTTLS. */
function plainSmtp(port: number, lines: string[], from = EXT): string {
    const script = [
        `exec 3<>/dev/tcp/${STORE}/${port} || exit 1`,
        'read -t 10 -r banner <&3; echo "$banner"',
        ...lines.map((l) => `printf '%s\\r\\n' '${l}' >&3; sleep 1`),
        "printf 'QUIT\\r\\n' >&3",
        "timeout 5 cat <&3",
    ].join("\n");
    return sshIn(from, "bash -s", script).out.replace(/\r/g, "");
}

describe("IMAP store", () => {
    beforeAll(() => {
        convergedLab(FLEET);
        // fresh test accounts and mailboxes on every run (rows of other accounts are never touched)
        const hash = must(sshIn(STORE, `openssl passwd -6 -stdin`, PASSWORD), "hashing").out.trim();
        const names = ACCOUNTS.map((a) => sql(a.local)).join(", ");
        const rows = ACCOUNTS.map(
            (a) => `(${sql(a.local)}, '${DOMAIN}', ${sql(a.hash ?? `{SHA512-CRYPT}${hash}`)}, 'store test', ${a.active ?? 1}, ${a.quota ?? 0}, ${a.filter ? sql(a.filter) : "NULL"})`,
        );
        must(
            sshIn(
                STORE,
                `set -e; sqlite3 /var/vmaildb/user.db; rm -rf ${ACCOUNTS.map((a) => home(a.local)).join(" ")} /tmp/mailinfra-filter-pwned
                 install -d -m 0755 /etc/exim4/userleft/${DOMAIN}
                 cp /etc/exim4/userleft/TEMPLATE /etc/exim4/userleft/${DOMAIN}/st-left
                 exiqgrep -i -r '^st-' | xargs -r exim4 -Mrm >/dev/null
                 /usr/local/sbin/mailinfra-push-userdb`,
                `BEGIN;\nDELETE FROM account WHERE domain = '${DOMAIN}' AND localpart IN (${names});\n` +
                    `INSERT INTO account (localpart, domain, password, realname, active, quota, filter) VALUES\n${rows.join(",\n")};\nCOMMIT;\n`,
            ),
            "creating test accounts",
        );
    }, 600_000);

    it("delivers mail from the internet into the account's Maildir, with and without +tag, readable over IMAPS", async () => {
        const t = tag();
        sendFromExt(`st-plain@${DOMAIN}`, `plain ${t}`);
        sendFromExt(`st-plain+news@${DOMAIN}`, `tagged ${t}`);
        expect(fileWith(STORE, `${home("st-plain")}/new`, `plain ${t}`)).toMatch(/^Envelope-to: st-plain@wikimedia\.test$/m);
        expect(fileWith(STORE, `${home("st-plain")}/new`, `tagged ${t}`)).toMatch(/^Envelope-to: st-plain\+news@wikimedia\.test$/m);
        const client = imap(`st-plain@${DOMAIN}`, PASSWORD);
        await client.connect();
        try {
            const lock = await client.getMailboxLock("INBOX");
            try {
                expect(await client.search({ subject: t }, { uid: true })).toHaveLength(2);
            } finally {
                lock.release();
            }
        } finally {
            await client.logout();
        }
    });

    it("has no plaintext IMAP listener: nothing listens on 143, ext gets no connection to it, 993 speaks TLS", () => {
        expect(ssh(STORE, "ss -ltnH 'sport = :143'").out.trim()).toBe("");
        // dropped by the firewall (a timeout), or refused
        const r = ssh(EXT, `timeout 5 bash -c 'exec 3<>/dev/tcp/${STORE}/143' 2>&1; echo rc=$?`);
        expect(r.out).not.toMatch(/rc=0$/m);
        expect(ssh(EXT, `echo | timeout 10 openssl s_client -connect ${STORE}:993 -quiet 2>/dev/null | head -n1`).out).toMatch(/^\* OK .*Dovecot/);
    });

    // the store's 25 takes only the relays and lily (firewall): that dialogue comes from the relay
    it.each([[25, RELAY], [587, EXT]])("offers no AUTH before STARTTLS on port %i (client %s) and refuses AUTH sent anyway (503)", (port, from) => {
        const out = plainSmtp(port, ["EHLO ext.example.net", `AUTH PLAIN ${Buffer.from(`\0st-plain@${DOMAIN}\0${PASSWORD}`).toString("base64")}`], from);
        expect(out).toMatch(/^250-STARTTLS/m);
        expect(out).not.toMatch(/^250[- ]AUTH/m);
        expect(out).toMatch(/^503 AUTH command used when not advertised/m);
    });

    it.each([
        ["465 (TLS on connect), AUTH PLAIN", ["--port", "465", "--tls-on-connect", "--auth", "PLAIN"]],
        ["587 (STARTTLS), AUTH LOGIN", ["--port", "587", "--tls", "--auth", "LOGIN"]],
    ])("accepts a submission on %s and sends it out through the relay", (_name, opts) => {
        const t = tag();
        const rcpt = `someone-${t}@example.net`;
        const r = swaksFromExt([
            "--server", STORE, ...opts, "--auth-user", `st-plain@${DOMAIN}`, "--auth-password", PASSWORD,
            "--from", `st-plain@${DOMAIN}`, "--to", rcpt, "--header", `Subject: submitted ${t}`,
        ]);
        expect(r.out).toMatch(/<[-~]\s+235 /);
        expect(r.out).toMatch(/<[-~]\s+250 /);
        const msg = fileWith(EXT, `/var/mail/sink/${rcpt}/`, t);
        expect(msg).toBeDefined();
        // received by the store from an authenticated user (without the client's address: test/lab/textdata.test.ts), then by the relay from the store
        expect(msg).toMatch(/^Received: by sanger\.lab\.test with esmtpsa/m);
        expect(msg).toMatch(/\[198\.51\.100\.12\][^)]*\)\s+by mchenry\.lab\.test/);
    });

    it("refuses a wrong password on submission (535)", () => {
        const r = swaksFromExt(["--server", STORE, "--port", "465", "--tls-on-connect", "--auth", "PLAIN", "--auth-user", `st-plain@${DOMAIN}`, "--auth-password", "wrong", "--to", "x@example.net", "--quit-after", "AUTH"]);
        expect(r.out).toMatch(/<~?\*+\s+535 /);
    });

    it("logs in an account with an old {SSHA} hash over IMAPS and SMTP AUTH", async () => {
        const client = imap(`st-old@${DOMAIN}`, OLD_PASSWORD);
        await client.connect();
        expect(client.authenticated).toBeTruthy();
        await client.logout();
        const r = swaksFromExt(["--server", STORE, "--port", "465", "--tls-on-connect", "--auth", "PLAIN", "--auth-user", `st-old@${DOMAIN}`, "--auth-password", OLD_PASSWORD, "--to", "x@example.net", "--quit-after", "AUTH"]);
        expect(r.out).toMatch(/<[-~]\s+235 /);
    });

    it("files a message the relay scored as spam into .Junk (default filter)", () => {
        const t = tag();
        sendFromExt(`st-plain@${DOMAIN}`, `mailinfra-spam-test ${t}`);
        const msg = fileWith(STORE, `${home("st-plain")}/.Junk/new`, t);
        expect(msg).toMatch(/^X-Spam-Score: [0-9.]+ \(\+{5,}\)$/m);
        expect(countFilesWith(STORE, `${home("st-plain")}/new`, t)).toBe(0);
    });

    it("files by header with the account's own filter from the DB; other mail stays in INBOX", () => {
        const t = tag();
        sendFromExt(`st-sorter@${DOMAIN}`, `apollo ${t}`, ["--add-header", "X-Mailinfra-Project: apollo 11"]);
        sendFromExt(`st-sorter@${DOMAIN}`, `other ${t}`);
        expect(fileWith(STORE, `${home("st-sorter")}/.Projects/new`, `apollo ${t}`)).toBeDefined();
        expect(fileWith(STORE, `${home("st-sorter")}/new`, `other ${t}`)).toBeDefined();
        expect(countFilesWith(STORE, `${home("st-sorter")}/new`, `apollo ${t}`)).toBe(0);
    });

    it.each([
        ["a pipe", "st-pipe"],
        ["a save to ../", "st-dotdot"],
    ])("refuses a filter with %s: nothing runs or escapes, the message lands in INBOX", (_what, local) => {
        const t = tag();
        sendFromExt(`${local}@${DOMAIN}`, `refused ${t}`);
        expect(fileWith(STORE, `${home(local)}/new`, t)).toBeDefined();
        expect(ssh(STORE, `ls /tmp/mailinfra-filter-pwned ${home("st-plain")}/.Stolen 2>&1`).out).not.toMatch(/^\/(tmp|var)/m);
        // the store's log: the message's id, then the refusal and the INBOX delivery under that id
        const id = ssh(STORE, `grep -F 'T="refused ${t}"' /var/log/exim4/mainlog | awk '{print $3}' | tail -n1`).out.trim();
        const log = ssh(STORE, `grep -F '${id}' /var/log/exim4/mainlog`).out;
        expect(log).toMatch(/user_filter router: skipped error: unknown filtering command "filter_refused:_pipe_or_path_outside_the_mailbox"/);
        expect(log).toMatch(new RegExp(`=> ${local} <${local}@wikimedia\\.test> R=local_user T=maildir_delivery`));
    });

    it("answers mail to a user who left (inactive, template present) with a bounce-style reply to the sender", () => {
        const t = tag();
        const sender = `left-${t}@example.net`;
        expect(swaksFromExt(["--server", RELAY, "--from", sender, "--to", `st-left@${DOMAIN}`, "--header", `Subject: for the leaver ${t}`]).out).toMatch(/<[-~]\s+250 /);
        const reply = fileWith(EXT, `/var/mail/sink/${sender}/`, t);
        expect(reply).toMatch(/^Subject: User st-left@wikimedia\.test has left the organization/m);
        expect(reply).toMatch(/has left the organization/);
        expect(reply).toContain(`for the leaver ${t}`); // the original is returned
        expect(ssh(STORE, `ls ${home("st-left")} 2>&1`).out).toMatch(/No such file/);
    });

    it("sends one vacation reply per sender per period", () => {
        const t = tag();
        const a = `vac-a-${t}@example.net`;
        const b = `vac-b-${t}@example.net`;
        for (const [from, n] of [[a, 1], [a, 2], [b, 1]] as const)
            expect(swaksFromExt(["--server", RELAY, "--from", from, "--to", `st-vacation@${DOMAIN}`, "--header", `Subject: vacation ${t} ${n}`]).out).toMatch(/<[-~]\s+250 /);
        expect(waitFor(() => countFilesWith(STORE, `${home("st-vacation")}/new`, t) === 3)).toBe(true);
        expect(fileWith(EXT, `/var/mail/sink/${a}/`, "Out of office")).toMatch(/I am away until Monday/);
        expect(fileWith(EXT, `/var/mail/sink/${b}/`, "Out of office")).toBeDefined();
        waitFor(() => false, 5000); // a second reply to a would have arrived by now
        expect(Number(ssh(EXT, `ls /var/mail/sink/${a}/new | wc -l`).out.trim())).toBe(1);
    });

    it("enforces the quota as the seed: over-quota message accepted, one warning, later mail deferred; Trash does not count", async () => {
        const t = tag();
        const q = home("st-quota");
        // 150 KB into a 100 KB box: accepted (quota is not inclusive), crossing 100 % sends the warning
        const big = ssh(EXT, `head -c 110000 /dev/urandom | base64 -w 76 > /tmp/st-big-${t} && echo ok`);
        expect(big.out).toContain("ok");
        sendFromExt(`st-quota@${DOMAIN}`, `big ${t}`, ["--body", `@/tmp/st-big-${t}`]);
        expect(fileWith(STORE, `${q}/new`, `big ${t}`)).toBeDefined();
        expect(fileWith(STORE, `${q}/new`, "Your mailbox is full")).toMatch(/has reached its quota of 100 KB/);
        // small messages to the full box: deferred on the store ("mailbox is full"), no second warning
        sendFromExt(`st-quota@${DOMAIN}`, `small1 ${t}`);
        sendFromExt(`st-quota@${DOMAIN}`, `small2 ${t}`);
        expect(waitFor(() => Number(ssh(STORE, `exiqgrep -i -r '^st-quota@' | wc -l`).out.trim()) === 2)).toBe(true);
        expect(ssh(STORE, `exim4 -Mvl $(exiqgrep -i -r '^st-quota@' | head -n1)`).out).toMatch(/mailbox is full/);
        expect(countFilesWith(STORE, `${q}/new`, `small`)).toBe(0);
        expect(countFilesWith(STORE, q, "Your mailbox is full")).toBe(1);
        // Dovecot reads the same maildirsize: over the limit
        const client = imap(`st-quota@${DOMAIN}`, PASSWORD);
        await client.connect();
        try {
            const before = await client.getQuota("INBOX");
            expect(usedKb(before)).toBeGreaterThan(100);
            // the user moves the big message to Trash: Trash is exempt on both sides
            const lock = await client.getMailboxLock("INBOX");
            try {
                const uids = await client.search({ subject: `big ${t}` }, { uid: true });
                expect(uids).toHaveLength(1);
                await client.messageMove(uids as number[], "Trash", { uid: true });
            } finally {
                lock.release();
            }
            const after = await client.getQuota("INBOX");
            expect(usedKb(after)).toBeLessThan(100);
        } finally {
            await client.logout();
        }
        // the deferred messages are delivered on the next queue run; still only one warning
        must(ssh(STORE, "exim4 -qff"), "queue run");
        expect(fileWith(STORE, `${q}/new`, `small1 ${t}`)).toBeDefined();
        expect(fileWith(STORE, `${q}/new`, `small2 ${t}`)).toBeDefined();
        expect(countFilesWith(STORE, q, "Your mailbox is full")).toBe(1);
    }, 180_000);

    it("is idempotent: a second pulumi up changes nothing and keeps the test accounts", () => {
        const r = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"]);
        expect(r.code).toBe(0);
        expect(r.out).not.toMatch(/^\s+[~+-]\s+\d+ to (update|create|delete)|\d+ (updated|created|deleted)/m);
        expect(pulumi(["preview", "--stack", "lab", "--expect-no-changes"]).code).toBe(0);
        expect(ssh(STORE, `sqlite3 /var/vmaildb/user.db "SELECT count(*) FROM account WHERE localpart LIKE 'st-%'"`).out.trim()).toBe(String(ACCOUNTS.length));
    }, 300_000);
});
