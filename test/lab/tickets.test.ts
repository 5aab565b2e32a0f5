// The ticket hosts on real daemons: Znuny on the OTRS host (its ticket DB, the relays' SELECT-only account,
// queue mail into Znuny's mail gateway) and RT on streber (rt-mailgate, correspond and comment), all fed
// with mail from the lab's "internet" host ext through the relay.
import * as crypto from "crypto";
import { beforeAll, describe, expect, it } from "vitest";
import { convergedLab, eximRoute, FLEET, pulumi, ssh, swaksFromExt, waitFor } from "./harness";

const RELAY = "198.51.100.11";
const STORE = "198.51.100.12";
const OTRS = "198.51.100.14";
const RT = "198.51.100.15";
const EXT = "198.51.100.20";
const RT_DB = "/var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb";

const tag = () => `t${crypto.randomBytes(6).toString("hex")}`;

/** SQL as root in the ticket DB on the OTRS host; returns the rows, tab-separated. */
function otrsSql(sql: string): string {
    const r = ssh(OTRS, `mariadb --batch --skip-column-names otrs <<'SQL'\n${sql}\nSQL`);
    if (r.code !== 0) throw new Error(`otrs SQL failed: ${r.out}`);
    return r.out.trim();
}

function rtSql(sql: string): string {
    const r = ssh(RT, `sqlite3 -separator '|' ${RT_DB} <<'SQL'\n${sql}\nSQL`);
    if (r.code !== 0) throw new Error(`RT SQL failed: ${r.out}`);
    return r.out.trim();
}

/** Waits until the query returns a non-empty result; returns it ("" on timeout). */
function eventually(query: () => string, timeoutMs = 90_000): string {
    let out = "";
    waitFor(() => (out = query()) !== "", timeoutMs, 2000);
    return out;
}

const sendViaRelay = (to: string, subject: string) =>
    swaksFromExt(["--server", RELAY, "--from", "sender@example.net", "--to", to, "--header", `Subject: ${subject}`, "--body", `body of ${subject}`]);

/** The relay's otrs router, as the relay runs it (exim -be as root reads the relay's DB credentials). */
function relayDbLookup(sql: string): string {
    const expr = `\${lookup mysql{${sql}}{found:\$value}{notfound}}`;
    return ssh(RELAY, `exim4 -be '${expr.replace(/'/g, `'\\''`)}' 2>&1`).out.trim();
}

/** The first bytes a MariaDB server sends to a TCP client from this host (a greeting or a refusal). */
function mariadbGreeting(from: string): string {
    // 48 bytes hold the server version ("…-MariaDB…") or the start of a refusal ("Host … is not allowed"); MariaDB
    // then waits for the client, so reading more would block until the timeout
    return ssh(from, `timeout 5 bash -c 'exec 3<>/dev/tcp/${OTRS}/3306; head -c 48 <&3' 2>&1 | tr -c '[:print:]' ' '`).out;
}

/** The reply codes to each RCPT and QUIT of an SMTP session Exim runs on `host` as if `client` held it (exim -bh: ACLs only, nothing delivered). */
function eximSessionAs(host: string, client: string, rcpts: string[]): string[] {
    const dialogue = ["EHLO client.example.net", "MAIL FROM:<sender@example.net>", ...rcpts.map((r) => `RCPT TO:<${r}>`), "QUIT"].map((l) => `${l}\\r\\n`).join("");
    const out = ssh(host, `printf '${dialogue}' | exim4 -bh ${client} 2>/dev/null`).out;
    return out.match(/^\d{3}(?= )/gm)?.slice(-(rcpts.length + 1)) ?? [];
}

describe("OTRS host (Znuny)", () => {
    beforeAll(() => convergedLab(FLEET));

    it("turns mail for a queue address inserted in the ticket DB into a Znuny ticket at once, without pulumi up", () => {
        const t = tag();
        const address = `queue-${t}@wikimedia.test`;
        expect(eximRoute(address, RELAY)).toMatch(/does not exist/);
        // as Znuny's admin UI does it: a system address linked to a queue
        otrsSql(`INSERT INTO system_address (value0, value1, queue_id, valid_id, create_time, create_by, change_time, change_by)
                 SELECT '${address}', 'lab queue ${t}', id, 1, NOW(), 1, NOW(), 1 FROM queue WHERE name='Misc'`);
        expect(eximRoute(address, RELAY)).toMatch(/router = otrs, transport = remote_smtp\n\s+host otrs\.lab\.test/);
        expect(sendViaRelay(address, `ticket ${t}`).out).toMatch(/<[-~]\s+250 /);
        const ticket = eventually(() => otrsSql(`SELECT q.name FROM ticket t JOIN queue q ON q.id = t.queue_id WHERE t.title = 'ticket ${t}'`));
        // Znuny dispatched it by the queue address to the queue it is linked to
        expect(ticket).toBe("Misc");
    });

    it("has the queue addresses from stack config, and a seeded one receives mail", () => {
        expect(otrsSql("SELECT value0 FROM system_address WHERE valid_id=1 ORDER BY value0")).toContain("otrs-test@wikimedia.test");
        const t = tag();
        expect(sendViaRelay("otrs-test@wikimedia.test", `seeded ${t}`).out).toMatch(/<[-~]\s+250 /);
        expect(eventually(() => otrsSql(`SELECT id FROM ticket WHERE title = 'seeded ${t}'`))).toMatch(/^\d+$/);
    });

    it("lets the relay SELECT queue addresses but nothing else", () => {
        expect(relayDbLookup("SELECT value0 FROM system_address WHERE value0='otrs-test@wikimedia.test' AND valid_id=1")).toBe("found:otrs-test@wikimedia.test");
        const insert = relayDbLookup("INSERT INTO system_address (value0, value1, queue_id, valid_id, create_time, create_by, change_time, change_by) VALUES ('evil@wikimedia.test', 'x', 1, 1, NOW(), 1, NOW(), 1)");
        expect(insert).toMatch(/INSERT command denied to user 'exim'@'198\.51\.100\.11'/);
        expect(relayDbLookup("DELETE FROM system_address")).toMatch(/DELETE command denied/);
        expect(relayDbLookup("SELECT login FROM users")).toMatch(/SELECT command denied/);
        expect(otrsSql("SELECT COUNT(*) FROM system_address WHERE value0='evil@wikimedia.test'")).toBe("0");
    });

    it("refuses DB connections from hosts that are not relays: the firewall drops them, and MariaDB has no account for them", () => {
        // dropped before MariaDB sees them: no greeting, not even its error 1130
        for (const host of [STORE, EXT]) expect(mariadbGreeting(host)).not.toMatch(/MariaDB|not allowed/);
        expect(mariadbGreeting(RELAY)).toMatch(/MariaDB/);
        expect(mariadbGreeting(RELAY)).not.toMatch(/not allowed/);
        // behind the firewall, the relays' account exists for the relay and the secondary MX only (and the local Exim)
        expect(otrsSql("SELECT host FROM mysql.user WHERE user='exim' ORDER BY host").split("\n")).toEqual(["198.51.100.11", "198.51.100.13", "localhost"]);
    });

    it("accepts queue mail from the relays only, and only for valid queue addresses", () => {
        // ext cannot connect at all (firewall, test/lab/firewall.test.ts); Exim's ACL refuses it as well
        expect(eximSessionAs(OTRS, EXT, ["otrs-test@wikimedia.test"])).toEqual(["550", "221"]);
        // an SMTP session as the relay would hold it (exim -bh: ACLs run, nothing is delivered)
        const fromRelay = ssh(OTRS, `printf 'EHLO mchenry.lab.test\\r\\nMAIL FROM:<sender@example.net>\\r\\nRCPT TO:<old-queue@wikimedia.test>\\r\\nRCPT TO:<nobody-${tag()}@wikimedia.test>\\r\\nRCPT TO:<OTRS-Test@wikimedia.test>\\r\\nQUIT\\r\\n' | exim4 -bh ${RELAY} 2>/dev/null`).out;
        expect(fromRelay.match(/^\d{3}(?= )/gm)?.slice(-4)).toEqual(["550", "550", "250", "221"]);
        expect(eximRoute("otrs-test@wikimedia.test", OTRS)).toMatch(/router = otrs_queue, transport = znuny_postmaster/);
    });
});

describe("RT host (request-tracker5)", () => {
    beforeAll(() => convergedLab(FLEET));

    it("creates a ticket in the addressed queue from mail to <queue>@, and adds a comment from <queue>-comment@", () => {
        const t = tag();
        expect(sendViaRelay("support@rt.wikimedia.test", `rt ${t}`).out).toMatch(/<[-~]\s+250 /);
        const row = eventually(() => rtSql(`SELECT t.id, q.Name FROM Tickets t JOIN Queues q ON q.id = t.Queue WHERE t.Subject = 'rt ${t}'`));
        const [id, queue] = row.split("|");
        expect(queue).toBe("support");
        expect(sendViaRelay("support-comment@rt.wikimedia.test", `[rt.wikimedia.test #${id}] note ${t}`).out).toMatch(/<[-~]\s+250 /);
        const comment = eventually(() => rtSql(`SELECT Type FROM Transactions WHERE ObjectType='RT::Ticket' AND ObjectId=${id} AND Type='Comment'`));
        expect(comment).toBe("Comment");
        // the comment did not open a second ticket
        expect(rtSql(`SELECT COUNT(*) FROM Tickets WHERE Subject LIKE '%${t}%'`)).toBe("1");
    });

    it("has the queues from stack config", () => {
        expect(rtSql("SELECT lower(Name) FROM Queues ORDER BY 1").split("\n")).toEqual(expect.arrayContaining(["general", "support"]));
    });

    it("never lets a hostile local part reach a shell or rt-mailgate", () => {
        const t = tag();
        const marker = `/tmp/mailinfra-pwned-${t}`;
        const hostile = [`general;touch\${IFS}${marker}`, `$(touch\${IFS}${marker})`, "general`id`", "general|id", "../general", `nosuch-${t}`];
        for (const local of hostile) {
            const address = `${local}@rt.wikimedia.test`;
            // streber's own routing: only rendered queue names reach the rt_mailgate transport
            expect(ssh(RT, `exim4 -bt '${address.replace(/'/g, `'\\''`)}' 2>&1`).out).not.toMatch(/router = rt_queue/);
            // the relay refuses it at RCPT (restricted characters) or passes it on and streber refuses it; either way no ticket
            sendViaRelay(address, `hostile ${t}`);
        }
        // straight at streber from outside: the firewall drops it, and Exim's ACL refuses it (not a relay)
        expect(eximSessionAs(RT, EXT, ["general@rt.wikimedia.test"])).toEqual(["550", "221"]);
        // what the relay passed on was refused by streber at RCPT (the relay bounces it)
        expect(waitFor(() => /rejected RCPT <nosuch-/.test(ssh(RT, `grep ${t} /var/log/exim4/rejectlog /var/log/exim4/mainlog 2>/dev/null`).out), 60_000, 2000)).toBe(true);
        expect(ssh(RT, `test -e ${marker}`).code).not.toBe(0);
        expect(rtSql(`SELECT COUNT(*) FROM Tickets WHERE Subject LIKE '%hostile ${t}%'`)).toBe("0");
        expect(ssh(RT, "grep -h 'Tainted' /var/log/exim4/mainlog /var/log/exim4/paniclog 2>/dev/null || true").out.trim()).toBe("");
    });
});

describe("ticket hosts converge idempotently", () => {
    it("a second pulumi up changes nothing", () => {
        const r = pulumi(["up", "--stack", "lab", "--yes", "--skip-preview"]);
        expect(r.code).toBe(0);
        expect(r.out).not.toMatch(/\b\d+ (to )?(create|update|replace|delete)d?\b/);
        expect(pulumi(["preview", "--stack", "lab", "--expect-no-changes"]).code).toBe(0);
    });
});
