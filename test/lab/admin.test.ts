// The account administration tool (scripts/mailadmin) and the store's maintenance jobs on real daemons:
// accounts created, changed and deleted with the CLI against the lab stack, mail from the lab's "internet"
// host through the relay, IMAPS logins, the mailbox cleanup and the Bayes training on the relay.
import * as crypto from "crypto";
import * as path from "path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { imapClient } from "../../lib/smoke";
import { convergedLab, FLEET, must, pulumi, REPO, run, Run, ssh, swaksFromExt, waitFor } from "./harness";

const RELAY = "198.51.100.11";
const STORE = "198.51.100.12";
const DOMAIN = "wikimedia.test";

const tag = (p: string) => `${p}${crypto.randomBytes(5).toString("hex")}`;

function mailadmin(args: string[], input?: string): Run {
    return run(path.join(REPO, "scripts", "mailadmin"), ["--stack", "lab", ...args], { input: input ?? "" });
}

function accountCount(): number {
    return Number(must(ssh(STORE, "sqlite3 /var/vmaildb/user.db 'SELECT count(*) FROM account;'"), "count accounts").out.trim());
}

/** A file in the account's Maildir (any folder) holding the token, or undefined within the timeout. */
function inMaildir(localpart: string, token: string, timeoutMs = 60_000): string | undefined {
    let file: string | undefined;
    waitFor(() => {
        const r = ssh(STORE, `grep -rl ${token} /var/vmail/${DOMAIN}/${localpart}/ 2>/dev/null | head -n1`);
        if (r.code === 0 && r.out.trim()) file = r.out.trim();
        return file !== undefined;
    }, timeoutMs);
    return file;
}

async function imapLogin(user: string, pass: string): Promise<boolean> {
    const client = imapClient(STORE, user, pass);
    try {
        await client.connect();
        await client.logout();
        return true;
    } catch {
        return false;
    }
}

function nspam(): number {
    const out = must(ssh(RELAY, "runuser -u debian-spamd -- sa-learn --dump magic 2>/dev/null || true"), "sa-learn --dump magic").out;
    const m = /^\S+\s+\S+\s+(\d+)\s+\S+\s+non-token data: nspam$/m.exec(out);
    return m ? Number(m[1]) : 0;
}

describe("mailadmin and store maintenance", () => {
    const created: string[] = [];
    beforeAll(() => convergedLab(FLEET), 900_000);
    afterAll(() => {
        for (const a of created) mailadmin(["delete", a, "--yes"]);
    });

    it("refuses hostile input with a clear message before anything is written", () => {
        const before = accountCount();
        for (const local of ["../x", "a'b", "a|b", ".hidden", "x+y"]) {
            const r = mailadmin(["add", `${local}@${DOMAIN}`, "--password-stdin"], "irrelevant-pw\n");
            expect(r.code, r.out).not.toBe(0);
            expect(r.out).toMatch(/mailadmin: local part ".*" is not allowed/);
        }
        expect(mailadmin(["add", "x@example.org", "--password-stdin"], "irrelevant-pw\n").out).toMatch(/not a local mail domain/);
        expect(mailadmin(["quota", `smoke@${DOMAIN}`, "lots"]).out).toMatch(/quota "lots" is not a size/);
        const pipe = mailadmin(["filter", "set", `smoke@${DOMAIN}`, "-"], "# Exim filter\npipe /bin/sh\n");
        expect(pipe.code).not.toBe(0);
        expect(pipe.out).toMatch(/refuses the filter: Pipe message to: \/bin\/sh\n\(the store's user_filter router forbids pipes/);
        const escape = mailadmin(["filter", "set", `smoke@${DOMAIN}`, "-"], "# Exim filter\nsave ../../other/\n");
        expect(escape.out).toMatch(/refuses the filter: Save message to: \.\.\/\.\.\/other\//);
        // passwords are never taken from the command line, and there is no terminal to prompt on
        expect(mailadmin(["add", `${tag("pw")}@${DOMAIN}`]).out).toMatch(/use --password-stdin/);
        expect(accountCount()).toBe(before);
        expect(ssh(STORE, "ls /etc/exim4/userleft/ 2>/dev/null; ls /var/vmail/wikimedia.test/").out).not.toMatch(/\.\.|'|\|/);
    });

    it("a new account receives mail from ext through the relay at once (no 550 window)", () => {
        const local = tag("adm");
        const addr = `${local}@${DOMAIN}`;
        const add = mailadmin(["add", addr, "--name", "Lab O'Test", "--quota", "50M", "--password-stdin"], "first-password-1\n");
        expect(add.code, add.out).toBe(0);
        created.push(addr);
        expect(add.out).toMatch(/created \(quota 50 MB\)[\s\S]*pushed: .*account DB received/);
        // immediately: the relay knows the account
        const token = tag("new");
        const sent = swaksFromExt(["--to", addr, "--from", "someone@example.net", "--server", RELAY, "--header", `Subject: ${token}`, "--body", token]);
        expect(sent.out).not.toMatch(/^<\** 5\d\d/m);
        expect(sent.out).toMatch(/^<- +250 .*(OK|queued|id=)/m);
        expect(inMaildir(local, token), "message in the new Maildir").toBeDefined();
        const list = mailadmin(["list", DOMAIN]);
        expect(list.code).toBe(0);
        expect(list.out).toMatch(/^ADDRESS\s+STATUS\s+QUOTA\s+FILTER\s+NAME$/m);
        expect(list.out).toMatch(new RegExp(`^${addr}\\s+active\\s+50 MB\\s+default\\s+Lab O'Test$`, "m"));
        const show = mailadmin(["show", addr]);
        expect(show.out).toMatch(/password:\s+\{SHA512-CRYPT\} hash/);
    });

    it("passwd from stdin: the new password logs in over IMAPS, the old one no longer does", async () => {
        const addr = created[0];
        expect(await imapLogin(addr, "first-password-1")).toBe(true);
        const r = mailadmin(["passwd", addr, "--password-stdin"], "second-password-2\n");
        expect(r.code, r.out).toBe(0);
        expect(await imapLogin(addr, "second-password-2")).toBe(true);
        expect(await imapLogin(addr, "first-password-1")).toBe(false);
        // the cleartext was never on a command line on the store (only its hash is stored)
        expect(ssh(STORE, `sqlite3 /var/vmaildb/user.db "SELECT password FROM account WHERE localpart='${addr.split("@")[0]}'"`).out).toMatch(/^\{SHA512-CRYPT\}\$6\$/);
    });

    it("filter set from stdin is stored after Exim's own check; a filter Exim cannot parse is refused", () => {
        const addr = created[0];
        const filter = '# Exim filter\nif $h_subject: contains "[lists]" then\n  save .Lists/\n  finish\nendif\n';
        expect(mailadmin(["filter", "set", addr, "-"], filter).code).toBe(0);
        expect(mailadmin(["filter", "show", addr]).out).toBe(filter);
        const broken = mailadmin(["filter", "set", addr, "-"], '# Exim filter\nif $h_subject: contians "x" then save .X/ endif\n');
        expect(broken.code).not.toBe(0);
        expect(broken.out).toMatch(/Exim on .* refuses the filter: .*unrecognized condition word "contians"/);
        expect(mailadmin(["filter", "show", addr]).out).toBe(filter);
        expect(mailadmin(["filter", "clear", addr]).code).toBe(0);
        expect(mailadmin(["filter", "show", addr]).out).toMatch(/default filter/);
    });

    it("deactivate: mail is no longer delivered to the mailbox (user-left or refused); reactivate restores delivery", () => {
        const addr = created[0];
        const local = addr.split("@")[0];
        const left = mailadmin(["left-message", "set", addr, "-"], "$local_part@$domain has left; write to noc@wikimedia.test.\n");
        expect(left.code, left.out).toBe(0);
        expect(ssh(STORE, `cat /etc/exim4/userleft/${DOMAIN}/${local}`).out).toMatch(/has left/);
        expect(mailadmin(["deactivate", addr]).code).toBe(0);
        expect(mailadmin(["show", addr]).out).toMatch(/status:\s+inactive[\s\S]*left msg:\s+set/);
        // the store routes an inactive account to its user-left reply (or refuses it), never to the Maildir
        expect(ssh(STORE, `exim4 -bt ${addr} 2>&1`).out).toMatch(/router = user_left|Unrouteable address|undeliverable/);
        const token = tag("off");
        swaksFromExt(["--to", addr, "--from", "someone@example.net", "--server", RELAY, "--header", `Subject: ${token}`, "--body", token]);
        expect(inMaildir(local, token, 15_000)).toBeUndefined();

        expect(mailadmin(["reactivate", addr]).code).toBe(0);
        const back = tag("on");
        swaksFromExt(["--to", addr, "--from", "someone@example.net", "--server", RELAY, "--header", `Subject: ${back}`, "--body", back]);
        expect(inMaildir(local, back)).toBeDefined();
        expect(mailadmin(["left-message", "clear", addr]).code).toBe(0);
    });

    it("Bayes: Bayes_Spam feeds sa-learn on the relay (nspam rises) and is purged; Bayes_Ham returns to INBOX with its flags", () => {
        const local = created[0].split("@")[0];
        const home = `/var/vmail/${DOMAIN}/${local}`;
        const batch = tag("bayes");
        const spam = [1, 2, 3]
            .map(
                (i) =>
                    `printf 'From: seller${i}@spam.example\\nTo: ${local}@${DOMAIN}\\nSubject: ${batch} cheap pills ${i}\\nMessage-ID: <${batch}.${i}@spam.example>\\n\\nBuy cheap pills ${batch} ${i} casino lottery\\n' > ${home}/.Bayes_Spam/cur/${batch}.${i}.sanger,S=120:2,S`,
            )
            .join("; ");
        must(
            ssh(
                STORE,
                `set -e; for d in .Bayes_Spam .Bayes_Ham; do install -d -o vmail -g vmail -m 0700 ${home}/$d ${home}/$d/cur ${home}/$d/new ${home}/$d/tmp; done; ${spam}; ` +
                    `printf 'From: friend@example.net\\nSubject: ${batch} lunch\\nMessage-ID: <${batch}.ham@example.net>\\n\\nlunch tomorrow ${batch}?\\n' > '${home}/.Bayes_Ham/cur/${batch}.ham.sanger,S=90:2,FS'; chown -R vmail:vmail ${home}`,
            ),
            "fill Bayes folders",
        );
        const before = nspam();
        const r = must(ssh(STORE, "/usr/local/sbin/mailinfra-bayes-collect"), "bayes collect");
        expect(r.out).toMatch(/3 spam learned and purged, 1 ham learned and returned to INBOX/);
        expect(nspam()).toBeGreaterThanOrEqual(before + 3);
        expect(ssh(STORE, `ls ${home}/.Bayes_Spam/cur ${home}/.Bayes_Spam/new`).out).not.toContain(run);
        const inbox = ssh(STORE, `ls ${home}/cur/ ${home}/.Bayes_Ham/cur/`).out;
        expect(inbox).toContain(`${batch}.ham.sanger,S=90:2,FS`); // same name: flagged + seen
        expect(ssh(STORE, `test -f '${home}/cur/${batch}.ham.sanger,S=90:2,FS'`).code).toBe(0);
    });

    it("delete + cleanup: the mailbox moves to the backup directory, inactive accounts keep theirs", () => {
        const gone = created[0];
        const goneLocal = gone.split("@")[0];
        const idle = `${tag("idle")}@${DOMAIN}`;
        expect(mailadmin(["add", idle, "--password-stdin"], "idle-password-3\n").code).toBe(0);
        created.push(idle);
        const idleLocal = idle.split("@")[0];
        must(ssh(STORE, `install -d -o vmail -g vmail -m 0700 /var/vmail/${DOMAIN}/${idleLocal} /var/vmail/${DOMAIN}/${idleLocal}/cur`), "idle mailbox");
        expect(mailadmin(["deactivate", idle]).code).toBe(0);
        expect(mailadmin(["delete", gone]).out).toMatch(/needs --yes/);
        const del = mailadmin(["delete", gone, "--yes"]);
        expect(del.code, del.out).toBe(0);
        expect(mailadmin(["show", gone]).out).toMatch(/does not exist/);
        // the relay refuses it at once
        const bounced = swaksFromExt(["--to", gone, "--from", "someone@example.net", "--server", RELAY, "--quit-after", "RCPT"]);
        expect(bounced.out).toMatch(/^<\** 550/m);

        const clean = must(ssh(STORE, "/usr/local/sbin/mailinfra-mailbox-cleanup"), "cleanup");
        expect(clean.out).toMatch(new RegExp(`moved /var/vmail/${DOMAIN}/${goneLocal} to /var/vmail-deleted/${DOMAIN}/${goneLocal}-\\d{8}T\\d{6}Z`));
        expect(ssh(STORE, `test -e /var/vmail/${DOMAIN}/${goneLocal}`).code).not.toBe(0);
        expect(ssh(STORE, `ls -d /var/vmail-deleted/${DOMAIN}/${goneLocal}-*/cur`).code).toBe(0);
        expect(ssh(STORE, `test -d /var/vmail/${DOMAIN}/${idleLocal}/cur && test -d /var/vmail/${DOMAIN}/smoke`).code).toBe(0);
        expect(ssh(STORE, "journalctl -t mailinfra-mailbox-cleanup --no-pager -n 5").out).toContain(goneLocal);
        created.shift();
    });

    it("the cleanup refuses to run on an empty account DB", () => {
        const r = ssh(STORE, "f=$(mktemp); sed 's|^db=.*|db=/nonexistent/user.db|' /usr/local/sbin/mailinfra-mailbox-cleanup > $f; bash $f; echo rc=$?; rm -f $f");
        expect(r.out).toMatch(/refusing to run: account DB \/nonexistent\/user.db is empty or unreadable[\s\S]*rc=1/);
    });

    it("accounts created by the CLI survive a second pulumi up with 0 changes", () => {
        const addr = created[created.length - 1];
        const up = must(pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"]), "pulumi up");
        expect(up.out).not.toMatch(/[1-9]\d* (to )?(create|update|replace|delete)/);
        expect(up.out).toMatch(/\d+ unchanged/);
        expect(mailadmin(["list", DOMAIN]).out).toContain(addr);
    });
});
