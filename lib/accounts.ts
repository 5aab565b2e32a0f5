// Pure logic of the account administration tool (scripts/mailadmin.ts): input validation, the SQL sent to
// sqlite3 on the store, and terminal output. Nothing here talks to a host.
//
// User strings never reach SQL as text: they travel as hex blob literals cast to TEXT, so no quoting rule
// of sqlite3 or of the shell can be broken by a hostile value.

import { ACCOUNT_DB } from "./roles/imap";

export { ACCOUNT_DB };
export const USER_LEFT_DIR = "/etc/exim4/userleft";

export class AdminError extends Error {
    constructor(message: string) {
        super(message);
        this.name = "AdminError";
    }
}

export interface Address {
    localpart: string;
    domain: string;
}

/** Local parts the store's paths and routers can carry: no leading dot, no '/', '..', quotes, pipes or '+' (the suffix separator). */
const LOCALPART = /^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$/;

export function parseAddress(input: string, localDomains: string[]): Address {
    const text = input.trim();
    const at = text.lastIndexOf("@");
    if (at <= 0 || at === text.length - 1) throw new AdminError(`"${input}" is not an address (expected localpart@domain)`);
    const localpart = text.slice(0, at).toLowerCase();
    const domain = text.slice(at + 1).toLowerCase();
    if (!LOCALPART.test(localpart) || localpart.includes(".."))
        throw new AdminError(
            `local part "${text.slice(0, at)}" is not allowed: use 1-64 of a-z 0-9 . _ - (not starting/ending with . _ -, no "..", no "+", quotes, slashes or pipes)`,
        );
    const domains = localDomains.map((d) => d.toLowerCase());
    if (!domains.includes(domain)) throw new AdminError(`domain "${domain}" is not a local mail domain (mail.localDomains: ${domains.join(", ")})`);
    return { localpart, domain };
}

/** Quota in KB: a plain number is KB; K/M/G suffixes (powers of 1024); 0 = unlimited. */
export function parseQuota(input: string): number {
    const m = /^\s*(\d{1,12})\s*([kmg]?)b?\s*$/i.exec(input);
    if (!m) throw new AdminError(`quota "${input}" is not a size: use KB as a whole number, or a number with K, M or G (0 = unlimited)`);
    const kb = Number(m[1]) * { "": 1, k: 1, m: 1024, g: 1024 * 1024 }[m[2].toLowerCase() as "" | "k" | "m" | "g"];
    if (!Number.isSafeInteger(kb) || kb > 2 ** 40) throw new AdminError(`quota "${input}" is too large`);
    return kb;
}

export function validateRealname(input: string): string {
    if (input.length > 64) throw new AdminError("real name is longer than 64 characters");
    if (/[\x00-\x1f\x7f]/.test(input)) throw new AdminError("real name contains control characters");
    return input;
}

/**
 * The local part of a filter check: size, the "# Exim filter" line, no NUL. What the filter may do is
 * Exim's call: mailadmin runs it with `exim4 -bf` on the store (filterCheckScript), and the store's
 * user_filter router keeps its forbid_* options for every delivery.
 */
export function validateFilter(text: string): string {
    if (text.length > 65536) throw new AdminError("filter is longer than 64 KB");
    if (!/^#\s*Exim filter\b/i.test(text)) throw new AdminError('filter must start with "# Exim filter"');
    if (/\0/.test(text)) throw new AdminError("filter contains a NUL byte");
    return text.endsWith("\n") ? text : `${text}\n`;
}

/**
 * Bash run as root on the store: the filter arrives on stdin and is tested by `exim4 -bf` against a sample
 * message addressed to the account. Exim's test mode evaluates expansions but applies none of the router's
 * forbid_* options, so it runs as nobody, without privileges (no_new_privs: exim4's setuid bit is void), with
 * no new processes (RLIMIT_NPROC 0: ${run} fails) and, where the kernel allows, without a network.
 */
export function filterCheckScript(a: Address): string {
    return [
        `set -uo pipefail`,
        `d=$(mktemp -d); trap 'rm -rf "$d"' EXIT; chmod 0711 "$d"`,
        `head -c 65536 > "$d/filter"; chmod 0644 "$d/filter"`,
        `net=(unshare --net --); "\${net[@]}" true 2>/dev/null || net=()`,
        `out=$(printf 'From: mailadmin-check@example.org\nTo: ${a.localpart}@${a.domain}\nSubject: mailadmin filter check\nMessage-ID: <mailadmin-check@example.org>\n\nbody\n' |`,
        `    timeout 20 "\${net[@]}" setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs prlimit --nproc=0 -- \\`,
        `    exim4 -bf "$d/filter" -bfd ${a.domain} -bfl ${a.localpart} 2>&1)`,
        `rc=$?`,
        `printf '%s\n' "$out"`,
        `exit $rc`,
    ].join("\n");
}

/**
 * Exim's verdict on a filter from `exim4 -bf` (exit code and output): null when the store would run it, else
 * why not, in Exim's words. Actions the router forbids (pipe, logwrite; saves outside the mailbox are refused by
 * create_file = belowhome; auto-replies reading a file or writing a log, once files outside the mailbox) are reported from Exim's own description of
 * what the filter does.
 */
export function filterVerdict(code: number, output: string): string | null {
    // Exim's preamble about the sample message is not part of the verdict
    const lines = output
        .split("\n")
        .map((l) => l.trimEnd())
        .filter((l) => l.trim() !== "" && !/^(Testing Exim filter file|Return-path copied from sender|Sender +=|Recipient +=)/.test(l));
    if (code !== 0) {
        const errors = lines.filter((l) => /error|failed|not permitted|forbidden|couldn't/i.test(l));
        return (errors.length ? errors : lines).slice(0, 10).join("\n") || `exim4 -bf failed (exit ${code})`;
    }
    const forbidden = lines.filter((l) => /^\s*(Unseen )?pipe message to:|^\s*logwrite\b|^\s*(Unseen )?save message to: *(\/|~|\S*\.\.)|^\s*(file|log):|^\s*once: *(\/|~|\S*\.\.)/i.test(l));
    if (forbidden.length) return `${forbidden.map((l) => l.trim()).join("\n")}\n(the store's user_filter router forbids pipes, log writes and files outside the mailbox)`;
    return null;
}

/** Placeholders of a left message, replaced by mailadmin when it writes the file (Exim sends the file as it is). */
export const LEFT_MESSAGE_PLACEHOLDERS = ["address", "localpart", "domain", "name", "postmaster"] as const;
export type LeftMessageValues = Record<(typeof LEFT_MESSAGE_PLACEHOLDERS)[number], string>;

/** A user-left reply text: plain text with %placeholder%s; nothing in it is ever expanded by Exim. */
export function validateLeftMessage(text: string): string {
    if (text.length > 16384) throw new AdminError("left message is longer than 16 KB");
    if (/\0/.test(text)) throw new AdminError("left message contains a NUL byte");
    if (/[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]/.test(text)) throw new AdminError("left message contains control characters (only tabs and line breaks are allowed)");
    for (const [, name] of text.matchAll(/%([A-Za-z_]+)%/g))
        if (!(LEFT_MESSAGE_PLACEHOLDERS as readonly string[]).includes(name))
            throw new AdminError(`left message uses unknown placeholder %${name}% (known: ${LEFT_MESSAGE_PLACEHOLDERS.map((p) => `%${p}%`).join(" ")})`);
    return text.endsWith("\n") ? text : `${text}\n`;
}

/** The file the store's left_message transport sends, verbatim: placeholders replaced in one pass (values are not rescanned). */
export function renderLeftMessage(text: string, values: LeftMessageValues): string {
    return validateLeftMessage(text).replace(/%([A-Za-z_]+)%/g, (_, name: keyof LeftMessageValues) => values[name].replace(/[\x00-\x1f\x7f]/g, " "));
}

export function validatePassword(pw: string): string {
    if (pw.length < 8) throw new AdminError("password must have at least 8 characters");
    if (pw.length > 1024) throw new AdminError("password is longer than 1024 characters");
    if (/[\r\n\0]/.test(pw)) throw new AdminError("password contains a line break or NUL");
    return pw;
}

/** A SHA512-CRYPT hash as produced by `openssl passwd -6`, stored with Dovecot's scheme prefix. */
export function storedHash(cryptOutput: string): string {
    const h = cryptOutput.trim();
    if (!/^\$6\$[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}$/.test(h)) throw new AdminError("unexpected output from openssl passwd -6");
    return `{SHA512-CRYPT}${h}`;
}

/** A string as an SQLite expression that cannot break out of its literal. */
export function sqlText(s: string): string {
    return `CAST(X'${Buffer.from(s, "utf8").toString("hex")}' AS TEXT)`;
}

function where(a: Address): string {
    return `localpart = ${sqlText(a.localpart)} AND domain = ${sqlText(a.domain)}`;
}

/** One write transaction; prints the number of changed rows so the caller can tell "no such account". */
function tx(statement: string): string {
    return [".bail on", "BEGIN IMMEDIATE;", statement, "SELECT changes();", "COMMIT;", ""].join("\n");
}

export const sql = {
    add: (a: Address, hash: string, realname: string, quotaKb: number) =>
        tx(
            `INSERT INTO account (localpart, domain, password, realname, active, quota) VALUES (${sqlText(a.localpart)}, ${sqlText(a.domain)}, ${sqlText(hash)}, ${sqlText(realname)}, 1, ${Math.trunc(quotaKb)});`,
        ),
    setActive: (a: Address, active: boolean) => tx(`UPDATE account SET active = ${active ? 1 : 0} WHERE ${where(a)};`),
    remove: (a: Address) => tx(`DELETE FROM account WHERE ${where(a)};`),
    passwd: (a: Address, hash: string) => tx(`UPDATE account SET password = ${sqlText(hash)} WHERE ${where(a)};`),
    quota: (a: Address, quotaKb: number) => tx(`UPDATE account SET quota = ${Math.trunc(quotaKb)} WHERE ${where(a)};`),
    /** null: back to the default filter. */
    filter: (a: Address, filter: string | null) => tx(`UPDATE account SET filter = ${filter === null ? "NULL" : sqlText(filter)} WHERE ${where(a)};`),
    list: (domain?: string) =>
        [
            ".mode json",
            `SELECT localpart, domain, realname, active, quota, filter IS NOT NULL AS customFilter FROM account${domain ? ` WHERE domain = ${sqlText(domain)}` : ""} ORDER BY domain, localpart;`,
            "",
        ].join("\n"),
    show: (a: Address) =>
        [".mode json", `SELECT id, localpart, domain, realname, active, quota, CAST(filter AS TEXT) AS filter, substr(password, 1, instr(password, '}')) AS scheme FROM account WHERE ${where(a)};`, ""].join("\n"),
};

/** The number of changed rows printed by a write transaction. */
export function changedRows(out: string): number {
    const lines = out.trim().split("\n");
    const n = Number(lines[lines.length - 1]);
    if (!Number.isInteger(n)) throw new AdminError(`unexpected sqlite3 output: ${out.trim().slice(0, 200)}`);
    return n;
}

/** sqlite3's JSON mode prints nothing for an empty result. */
export function parseRows<T>(out: string): T[] {
    const t = out.trim();
    return t === "" ? [] : (JSON.parse(t) as T[]);
}

/** sqlite3's error for a write, in words an operator understands. */
export function explainSqliteError(err: string, a?: Address): string {
    if (/UNIQUE constraint failed/.test(err) && a) return `${a.localpart}@${a.domain} already exists`;
    if (/CHECK constraint failed/.test(err)) return "the account DB refused the local part (CHECK constraint)";
    if (/database is locked/.test(err)) return "the account DB is locked by another writer; try again";
    return `sqlite3 failed: ${err.trim()}`;
}

export interface AccountRow {
    id?: number;
    localpart: string;
    domain: string;
    realname: string | null;
    active: number;
    quota: number;
    customFilter?: number;
    filter?: string | null;
    scheme?: string;
}

export function formatQuota(kb: number): string {
    if (kb === 0) return "unlimited";
    if (kb % (1024 * 1024) === 0) return `${kb / (1024 * 1024)} GB`;
    if (kb % 1024 === 0) return `${kb / 1024} MB`;
    return `${kb} KB`;
}

/** A plain-text table (no colours, fits pipes and terminals alike). */
export function formatTable(header: string[], rows: string[][]): string {
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join("  ").trimEnd();
    return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n") + "\n";
}

export function formatList(rows: AccountRow[]): string {
    if (rows.length === 0) return "no accounts\n";
    const body = rows.map((r) => [`${r.localpart}@${r.domain}`, r.active ? "active" : "inactive", formatQuota(r.quota), r.customFilter ? "custom" : "default", r.realname ?? ""]);
    return formatTable(["ADDRESS", "STATUS", "QUOTA", "FILTER", "NAME"], body) + `${rows.length} account(s)\n`;
}

export function formatShow(r: AccountRow, leftMessage: string | null): string {
    const out = [
        `address:   ${r.localpart}@${r.domain}`,
        `name:      ${r.realname ?? ""}`,
        `status:    ${r.active ? "active" : "inactive"}`,
        `quota:     ${formatQuota(r.quota)}${r.quota ? ` (${r.quota} KB)` : ""}`,
        `password:  ${r.scheme || "(none)"} hash`,
        `filter:    ${r.filter == null ? "default" : "custom"}`,
        `left msg:  ${leftMessage === null ? "none" : "set"}`,
    ];
    return out.join("\n") + "\n";
}

/** Path of the user-left template of an account (validated address parts only). */
export function leftMessagePath(a: Address): string {
    return `${USER_LEFT_DIR}/${a.domain}/${a.localpart}`;
}

/** A word for a shell command line; only used for validated paths, never for user text. */
export function shellQuote(s: string): string {
    return `'${s.replace(/'/g, `'\\''`)}'`;
}
