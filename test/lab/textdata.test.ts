// User and operator text is data, and authenticated submission is held to the account (issue 12 items 4-6), on
// real daemons: left messages sent literally, filters judged by Exim on the store, sender and From: tied to the
// login, no client address in the headers that reach the internet (ext's sink), a per-account rate limit, and
// a relay copy of the account DB without hashes or filters that still routes. Mail comes from ext (outside
// mail.ownNetworks); accounts are made with scripts/mailadmin and deleted afterwards.
import * as crypto from "crypto";
import * as path from "path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { convergedLab, FLEET, must, REPO, run, Run, smokePassword, ssh, swaksFromExt, waitFor } from "./harness";

const RELAY = "198.51.100.11";
const STORE = "198.51.100.12";
const EXT = "198.51.100.20";
const DOMAIN = "wikimedia.test";
const PASSWORD = `td-${crypto.randomBytes(8).toString("hex")}`;
const tag = () => `td${crypto.randomBytes(5).toString("hex")}`;
const A = `td-a@${DOMAIN}`;
const B = `td-b@${DOMAIN}`;
const LEFT = `td-left@${DOMAIN}`;
/** Pulumi.lab.yaml mail.submission.accountLimits: 3 messages per hour. */
const LIMITED = `td-limited@${DOMAIN}`;

function mailadmin(args: string[], input?: string): Run {
    return run(path.join(REPO, "scripts", "mailadmin"), ["--stack", "lab", ...args], { input: input ?? "" });
}

/** A message in ext's sink for the recipient that contains the token. */
function inSink(recipient: string, token: string, timeoutMs = 60_000): string | undefined {
    let text: string | undefined;
    waitFor(() => {
        const r = ssh(EXT, `f=$(grep -rlF '${token}' /var/mail/sink/${recipient}/ 2>/dev/null | head -n1); [ -n "$f" ] && cat "$f"`);
        if (r.code === 0 && r.out.includes(token)) text = r.out;
        return text !== undefined;
    }, timeoutMs);
    return text;
}

/** An authenticated submission on the store's 465 as `user`. */
function submit(user: string, password: string, from: string, to: string, extra: string[] = []): Run {
    return swaksFromExt(["--server", STORE, "--port", "465", "--tls-on-connect", "--auth", "PLAIN", "--auth-user", user, "--auth-password", password, "--from", from, "--to", to, ...extra]);
}

describe("text is data; submission is the account's", () => {
    beforeAll(() => {
        convergedLab(FLEET);
        for (const a of [A, B, LEFT, LIMITED]) {
            mailadmin(["delete", a, "--yes"]);
            must(mailadmin(["add", a, "--name", "textdata test", "--password-stdin"], `${PASSWORD}\n`), `mailadmin add ${a}`);
        }
        // the limited account starts from no measured rate (Exim's ratelimit hints DB)
        must(ssh(STORE, "rm -f /var/spool/exim4/db/ratelimit /var/spool/exim4/db/ratelimit.lockfile"), "reset ratelimit DB");
    }, 900_000);
    afterAll(() => {
        for (const a of [A, B, LEFT, LIMITED]) mailadmin(["delete", a, "--yes"]);
        ssh(STORE, `rm -rf /etc/exim4/userleft/${DOMAIN}/td-left /tmp/td-pwned`);
    });

    it("a left message containing ${run{/bin/id}} comes back to the sender as literal text, placeholders filled in", () => {
        const set = mailadmin(["left-message", "set", LEFT, "-"], "%name% (%address%) has left. ${run{/bin/id}} $local_part\n");
        expect(set.code, set.out).toBe(0);
        expect(mailadmin(["deactivate", LEFT]).code).toBe(0);
        const t = tag();
        const sender = `left-${t}@example.net`;
        expect(swaksFromExt(["--server", RELAY, "--from", sender, "--to", LEFT, "--header", `Subject: leaver ${t}`]).out).toMatch(/<[-~]\s+250 /);
        const reply = inSink(sender, t);
        expect(reply).toBeDefined();
        expect(reply).toContain("textdata test (td-left@wikimedia.test) has left. ${run{/bin/id}} $local_part");
        expect(reply).not.toMatch(/uid=\d+/);
    });

    it("a filter Exim refuses is rejected by mailadmin with Exim's own message; ${run} in a filter runs nothing", () => {
        const broken = mailadmin(["filter", "set", A, "-"], '# Exim filter\nif $h_subject: contians "x" then save .X/ endif\n');
        expect(broken.code).not.toBe(0);
        expect(broken.out).toMatch(/Exim on sanger\.lab\.test refuses the filter: Filter error: unrecognized condition word "contians"/);
        const run = mailadmin(["filter", "set", A, "-"], '# Exim filter\nif "${run{/usr/bin/touch /tmp/td-pwned}}" is "" then\n  save .X/\nendif\n');
        expect(run.code, run.out).not.toBe(0);
        expect(run.out).toMatch(/refuses the filter: /);
        expect(ssh(STORE, "ls /tmp/td-pwned 2>&1").out).toMatch(/No such file/);
        expect(mailadmin(["filter", "show", A]).out).toBe("(default filter)\n");
        const good = mailadmin(["filter", "set", A, "-"], '# Exim filter\nif $h_subject: contains "[lists]" then\n  save .Lists/\nendif\n');
        expect(good.code, good.out).toBe(0);
    });

    it("account A cannot send as account B or as a bare local address (5xx); its own address, a +tag and From: match", () => {
        const t = tag();
        const asB = submit(A, PASSWORD, B, `x-${t}@example.net`);
        expect(asB.out).toMatch(/<~?\*+\s+550[ -]5\.7\.1 <td-b@wikimedia\.test> is not an address of td-a@wikimedia\.test/);
        const bare = submit(A, PASSWORD, "root", `x-${t}@example.net`);
        expect(bare.out).toMatch(/<~?\*+\s+5\d\d /);
        expect(bare.out).not.toMatch(/<~?\s+250 .*id=/);
        const postmaster = submit(A, PASSWORD, `postmaster@${DOMAIN}`, `x-${t}@example.net`);
        expect(postmaster.out).toMatch(/<~?\*+\s+550[ -]5\.7\.1 /);
        const fromB = submit(A, PASSWORD, A, `x-${t}@example.net`, ["--header", `From: Someone <${B}>`]);
        expect(fromB.out).toMatch(/<~?\*+\s+550[ -]5\.7\.1 the From header is not an address of td-a@wikimedia\.test/);
        const tagged = submit(A, PASSWORD, `td-a+lists@${DOMAIN}`, `x-${t}@example.net`, ["--header", `From: A <td-a+lists@${DOMAIN}>`, "--header", `Subject: tagged ${t}`]);
        expect(tagged.out).toMatch(/<~?\s+250 .*id=/);
        // noc@ is an alias of the smoke account (Pulumi.lab.yaml mail.aliases)
        const alias = submit(`smoke@${DOMAIN}`, smokePassword(), `noc@${DOMAIN}`, `x-${t}@example.net`, ["--header", `From: NOC <noc@${DOMAIN}>`]);
        expect(alias.out).toMatch(/<~?\s+250 .*id=/);
        // logged with the client and the refused sender (Exim's rejected-MAIL line carries no A= field)
        expect(ssh(STORE, `grep -F 'submission refused: sender <td-b@wikimedia.test> for td-a@wikimedia.test' /var/log/exim4/mainlog | tail -n1`).out).toMatch(/H=ext\.lab\.test \[198\.51\.100\.20\].* rejected MAIL <td-b@wikimedia\.test>/);
    });

    it("the submitting client's address and HELO are absent from the headers that reach ext; the store logs them", () => {
        const t = tag();
        const rcpt = `ip-${t}@example.net`;
        const r = submit(A, PASSWORD, A, rcpt, ["--ehlo", `helo-${t}.example.net`, "--header", `Subject: ip ${t}`]);
        expect(r.out).toMatch(/<~?\s+250 .*id=/);
        const msg = inSink(rcpt, t);
        expect(msg).toBeDefined();
        const headers = msg!.split(/\r?\n\r?\n/)[0];
        expect(headers).toMatch(/^Received: by sanger\.lab\.test with esmtpsa/m);
        expect(headers).not.toContain(`[${EXT}]`);
        expect(headers).not.toContain(`helo-${t}`);
        expect(ssh(STORE, `grep -F 'helo-${t}.example.net' /var/log/exim4/mainlog`).out).toContain(`[${EXT}]`);
    });

    it("the (N+1)th message over a small per-account limit gets 4xx, is logged, and shows in status", () => {
        const codes: string[] = [];
        for (let i = 1; i <= 4; i++) {
            const t = tag();
            const r = submit(LIMITED, PASSWORD, LIMITED, `rl-${t}@example.net`, ["--header", `Subject: rate ${i} ${t}`]);
            codes.push(/<~?\s+250 .*id=/.test(r.out) ? "250" : (/<~?\*+\s+(\d{3}) /.exec(r.out)?.[1] ?? r.out.slice(-300)));
        }
        expect(codes).toEqual(["250", "250", "250", "451"]);
        expect(ssh(STORE, `grep -F 'submission rate limit: ${LIMITED}' /var/log/exim4/mainlog | tail -n1`).out).toMatch(/limit 3\)/);
        const status = run("npm", ["run", "--silent", "status", "--", "lab", "--no-probes"]);
        expect(status.out).toMatch(new RegExp(`submission rate limit.*${LIMITED.replace(/\./g, "\\.")} 1x`));
    }, 180_000);

    it("the relay's copy of the account DB has no hash or filter columns, and routing through it still works", () => {
        expect(ssh(RELAY, `sqlite3 /var/vmaildb/user.db "SELECT group_concat(name, ',') FROM pragma_table_info('account');"`).out.trim()).toBe("id,localpart,domain,active");
        expect(ssh(RELAY, "grep -c 'CRYPT\\|Exim filter' /var/vmaildb/user.db || true").out.trim()).toBe("0");
        expect(ssh(RELAY, `exim4 -bt ${A} 2>&1`).out).toMatch(/router = imap/);
        // a copy that still carries the hashes is refused by the relay's receiver
        const full = ssh(RELAY, `d=$(mktemp -d); sqlite3 "$d/full.db" "CREATE TABLE account (id INTEGER PRIMARY KEY, localpart TEXT, domain TEXT, password TEXT, active INTEGER); INSERT INTO account VALUES (1, 'x', 'wikimedia.test', '{SHA512-CRYPT}x', 1);"; chmod 0644 "$d/full.db"; chmod 0755 "$d"; runuser -u userdb-sync -- /usr/local/sbin/mailinfra-receive-userdb < "$d/full.db" 2>&1; echo rc=$?; rm -rf "$d"`);
        expect(full.out).toMatch(/rejected: the account table has columns id,localpart,domain,password,active[\s\S]*rc=1/);
        must(ssh(STORE, "/usr/local/sbin/mailinfra-push-userdb"), "push the real DB again");
        const t = tag();
        expect(swaksFromExt(["--server", RELAY, "--from", `r-${t}@example.net`, "--to", A, "--header", `Subject: routed ${t}`]).out).toMatch(/<[-~]\s+250 /);
        expect(waitFor(() => ssh(STORE, `grep -rlF 'routed ${t}' /var/vmail/${DOMAIN}/td-a/ 2>/dev/null`).out.trim() !== "", 60_000)).toBe(true);
    });
});
