// The admin tool's pure logic: what it refuses before anything is written, and the SQL it sends.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { describe, expect, it } from "vitest";
import { ACCOUNT_SCHEMA_V1 } from "../../lib/roles/imap";
import { parseStackConfig } from "../../lib/config";
import { bayesReceiverPart, storeMaintenancePart } from "../../lib/parts/storeMaintenance";
import { stackConfig } from "./stackConfig";
import {
    AdminError,
    changedRows,
    formatList,
    formatQuota,
    parseAddress,
    parseQuota,
    parseRows,
    sql,
    sqlText,
    storedHash,
    filterCheckScript,
    filterVerdict,
    renderLeftMessage,
    validateFilter,
    validateLeftMessage,
    validatePassword,
} from "../../lib/accounts";

const DOMAINS = ["wikimedia.test", "wikipedia.test"];

describe("address validation", () => {
    it("accepts a plain address and lower-cases it", () => {
        expect(parseAddress("Jane.Doe@WikiMedia.test", DOMAINS)).toEqual({ localpart: "jane.doe", domain: "wikimedia.test" });
    });
    it.each(["../x@wikimedia.test", "a'b@wikimedia.test", "a|b@wikimedia.test", ".x@wikimedia.test", "a/b@wikimedia.test", "a+b@wikimedia.test", "a..b@wikimedia.test", "a b@wikimedia.test", "a\"b@wikimedia.test", "x;rm@wikimedia.test", "@wikimedia.test", "noat"])(
        "refuses hostile or malformed %s",
        (a) => {
            expect(() => parseAddress(a, DOMAINS)).toThrow(AdminError);
        },
    );
    it("names the allowed domains when the domain is not local", () => {
        expect(() => parseAddress("x@example.org", DOMAINS)).toThrow(/not a local mail domain.*wikimedia\.test/);
    });
});

describe("quota", () => {
    it("reads KB, M and G, 0 = unlimited", () => {
        expect(parseQuota("500")).toBe(500);
        expect(parseQuota("100M")).toBe(102400);
        expect(parseQuota("2g")).toBe(2097152);
        expect(parseQuota("0")).toBe(0);
        expect(formatQuota(0)).toBe("unlimited");
        expect(formatQuota(102400)).toBe("100 MB");
    });
    it.each(["-1", "1.5M", "lots", "", "1T"])("refuses %s", (q) => expect(() => parseQuota(q)).toThrow(/not a size/));
});

describe("filter validation", () => {
    const ok = '# Exim filter\nif $h_subject: contains "[wikien-l]" then\n  save .Lists/\nendif\n';
    it("accepts a filter saving to a folder below the mailbox", () => expect(validateFilter(ok)).toBe(ok));
    it.each([
        ["no header", 'if $h_subject: contains "x" then save .X/ endif', /must start with "# Exim filter"/],
        ["NUL byte", "# Exim filter\nkeep\0", /NUL/],
        ["65 KB", `# Exim filter\n${"#".repeat(66000)}`, /longer than 64 KB/],
    ])("refuses %s before asking Exim", (_, text, msg) => expect(() => validateFilter(text)).toThrow(msg));
    it("leaves the language to Exim: no local blocklist of words", () => expect(validateFilter("# Exim filter\n# a comment about pipe | x\nkeep\n")).toMatch(/keep/));
});

describe("Exim's verdict on a filter (exim4 -bf)", () => {
    it("passes a filter that only saves into the mailbox", () =>
        expect(filterVerdict(0, 'Testing Exim filter file "/tmp/x/filter"\n\nSave message to: .Lists/\nFiltering did not set up a significant delivery.\n')).toBeNull());
    it("refuses with Exim's own error line, without the sample message's preamble (Exim 4.96 -bf)", () =>
        expect(filterVerdict(1, 'Return-path copied from sender\nSender      = nobody@sanger.lab.test\nRecipient   = td-a@wikimedia.test\nFilter error: unrecognized condition word "contians" near line 2 of filter file\n')).toBe(
            'Filter error: unrecognized condition word "contians" near line 2 of filter file',
        ));
    it("refuses with Exim's own message when Exim fails the filter", () =>
        expect(filterVerdict(1, 'Testing Exim filter file "/tmp/x/filter"\n\nexim: error in filter file: unknown filtering command "frobnicate" near line 2 of filter file\n')).toBe(
            'exim: error in filter file: unknown filtering command "frobnicate" near line 2 of filter file',
        ));
    it.each([
        ["a pipe", "Pipe message to: /bin/id"],
        ["an unseen pipe", "Unseen pipe message to: /bin/id"],
        ["an absolute save", "Save message to: /etc/x"],
        ["a save above the mailbox", "Save message to: ../other/"],
        ["a log write", 'Logwrite "x"'],
        ["an auto-reply text read from another file", "Mail to: a@example.org\n   file: ../../vmaildb/user.db"],
        ["an auto-reply text read from a relative file (another mailbox)", "Mail to: a@example.org\n   file: wikimedia.test/b/cur/1"],
        ["an auto-reply once file outside the mailbox", "Mail to: a@example.org\n   once: /var/vmail/x"],
    ])("refuses %s the router forbids, quoting Exim", (_, line) =>
        expect(filterVerdict(0, `Testing Exim filter file "f"\n\n${line}\n`)).toContain(`${line.split("\n").pop()!.trim()}\n(the store's user_filter router forbids`));
    it("passes a vacation reply with its once file in the mailbox", () =>
        expect(filterVerdict(0, 'Testing Exim filter file "f"\n\nMail to: a@example.org\n   once: .vacation.db\n   once_repeat: 7d\n')).toBeNull());
    it("runs Exim unprivileged, without new processes, on a sample message to the account", () => {
        const script = filterCheckScript({ localpart: "st-a", domain: "wikimedia.test" });
        expect(script).toMatch(/setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs prlimit --nproc=0 -- \\\n +exim4 -bf "\$d\/filter" -bfd wikimedia.test -bfl st-a/);
        expect(script).toContain("To: st-a@wikimedia.test");
        execFileSync("bash", ["-n"], { input: script });
    });
});

describe("left messages", () => {
    const values = { address: "st-a@wikimedia.test", localpart: "st-a", domain: "wikimedia.test", name: "A. User", postmaster: "noc@wikimedia.test" };
    it("fills in the fixed placeholders", () =>
        expect(renderLeftMessage("%name% (%address%) has left %domain%; ask %postmaster%.", values)).toBe("A. User (st-a@wikimedia.test) has left wikimedia.test; ask noc@wikimedia.test.\n"));
    it("keeps Exim expansion text literally (the store never expands the file)", () =>
        expect(renderLeftMessage("bye ${run{/bin/id}} $local_part \\$ %", values)).toBe("bye ${run{/bin/id}} $local_part \\$ %\n"));
    it("does not rescan substituted values", () => expect(renderLeftMessage("%name%", { ...values, name: "%postmaster%\nX" })).toBe("%postmaster% X\n"));
    it("names an unknown placeholder", () => expect(() => validateLeftMessage("hi %adress%")).toThrow(/unknown placeholder %adress% \(known: %address% %localpart%/));
    it("refuses NUL and control characters", () => {
        expect(() => validateLeftMessage("a\0b")).toThrow(/NUL/);
        expect(() => validateLeftMessage("a\x1b[2Jb")).toThrow(/control characters/);
    });
});

describe("other input", () => {
    it("refuses short passwords and line breaks", () => {
        expect(() => validatePassword("short")).toThrow(/at least 8/);
        expect(() => validatePassword("longenough\nx")).toThrow(/line break/);
    });
    it("accepts only openssl's SHA512-crypt output as a hash", () => {
        const h = "$6$abcdefgh$" + "a".repeat(86);
        expect(storedHash(h + "\n")).toBe(`{SHA512-CRYPT}${h}`);
        expect(() => storedHash("oops")).toThrow(/unexpected output/);
    });
});

describe("SQL", () => {
    it("carries user strings as hex literals only", () => {
        const s = sqlText("a'); DROP TABLE account; --");
        expect(s).toMatch(/^CAST\(X'[0-9a-f]+' AS TEXT\)$/);
        expect(sql.add({ localpart: "x", domain: "y.test" }, "{SHA512-CRYPT}$6$h", "O'Brien; DROP", 0)).not.toContain("O'Brien");
    });

    const haveSqlite = (() => {
        try {
            execFileSync("sqlite3", ["-version"]);
            return true;
        } catch {
            return false;
        }
    })();
    it.skipIf(!haveSqlite)("runs against the real schema in sqlite3: add, duplicate refused, update, list, delete", () => {
        const db = path.join(fs.mkdtempSync(path.join(os.tmpdir(), "accounts-")), "user.db");
        const run = (input: string) => execFileSync("sqlite3", [db], { input, encoding: "utf8" });
        run(ACCOUNT_SCHEMA_V1);
        const a = { localpart: "jane", domain: "wikimedia.test" };
        expect(changedRows(run(sql.add(a, "{SHA512-CRYPT}$6$x", "Jane O'Brien", 1024)))).toBe(1);
        expect(() => execFileSync("sqlite3", [db], { input: sql.add(a, "h", "", 0), stdio: "pipe" })).toThrow(/UNIQUE/);
        expect(changedRows(run(sql.setActive(a, false)))).toBe(1);
        expect(changedRows(run(sql.filter(a, "# Exim filter\nkeep\n")))).toBe(1);
        expect(changedRows(run(sql.quota({ localpart: "nobody", domain: "wikimedia.test" }, 5)))).toBe(0);
        const rows = parseRows<any>(run(sql.list()));
        expect(rows).toEqual([{ localpart: "jane", domain: "wikimedia.test", realname: "Jane O'Brien", active: 0, quota: 1024, customFilter: 1 }]);
        expect(parseRows<any>(run(sql.show(a)))[0]).toMatchObject({ filter: "# Exim filter\nkeep\n", scheme: "{SHA512-CRYPT}" });
        expect(formatList(rows)).toMatch(/^ADDRESS\s+STATUS\s+QUOTA\s+FILTER\s+NAME\n-+.*\njane@wikimedia\.test\s+inactive\s+1 MB\s+custom\s+Jane O'Brien\n1 account\(s\)\n$/);
        expect(changedRows(run(sql.remove(a)))).toBe(1);
        expect(parseRows(run(sql.list()))).toEqual([]);
    });
});

describe("store maintenance plan", () => {
    it("runs the cleanup daily and the Bayes training nightly when a Bayes key is configured", () => {
        const lab = storeMaintenancePart(parseStackConfig(stackConfig("lab")));
        expect(lab.cron!.map((c) => [c.name, c.schedule])).toEqual([
            ["mailinfra-mailbox-cleanup", "17 4 * * *"],
            ["mailinfra-bayes-collect", "47 2 * * *"],
        ]);
        const key = lab.files!.find((f) => f.path === "/root/.ssh/mailinfra-bayes")!;
        expect(key).toMatchObject({ secret: true, mode: "0600", fromSecrets: { names: ["bayesLearnKey"] } });
        const collect = lab.files!.find((f) => f.path === "/usr/local/sbin/mailinfra-bayes-collect")!;
        expect(collect.content).toContain("bayes-learn@\"$relay\"");
        expect(collect.content).toContain("mchenry.lab.test");
        const cfg = parseStackConfig(stackConfig("lab"));
        delete cfg.mail.bayesLearnPublicKey;
        expect(storeMaintenancePart(cfg).cron!.map((c) => c.name)).toEqual(["mailinfra-mailbox-cleanup"]);
    });

    it("gives the relay's Bayes user only the receiver, and the receiver only two sa-learn command lines", () => {
                const part = bayesReceiverPart(parseStackConfig(stackConfig("lab")));
        const keys = part.files!.find((f) => f.path === "/var/lib/bayes-learn/.ssh/authorized_keys")!;
        expect(keys.content).toMatch(/^restrict,command="\/usr\/local\/sbin\/mailinfra-receive-bayes" ssh-ed25519 \S+ mailinfra-bayes-learn-lab\n$/);
        const sudoers = part.files!.find((f) => f.path === "/etc/sudoers.d/mailinfra-bayes")!;
        expect(sudoers.validate).toContain("visudo -c");
        expect(sudoers.content).toMatch(/^bayes-learn ALL=\(debian-spamd\) NOPASSWD: \/usr\/bin\/sa-learn --spam --mbox -, \/usr\/bin\/sa-learn --ham --mbox -$/m);
    });
});
