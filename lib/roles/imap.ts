// The IMAP store (seed: sanger).
import { StackConfig } from "../config";
import { emptyPlan, FileSpec, HostPlan, mergePlans, render, scriptFile, StepSpec } from "../plan";
import { fqdnOf, hostsWithRole } from "../config";
import { basePart, eximPart, templateData } from "../parts/common";
import { USERDB_SYNC_USER } from "./relay";
import { storeMaintenancePart } from "../parts/storeMaintenance";
import { backupPart, restoreOnRebuildStep } from "../parts/backup";
import { addressesOf } from "../parts/firewall";

/** Hosts that hand the store mail for its domains without SMTP AUTH: the relays and the secondary MX. */
export function storeInboundHosts(cfg: StackConfig): string[] {
    return addressesOf(cfg, "relay", "lists");
}
import { knownHostsPart } from "../parts/knownHosts";

export const ACCOUNT_DB = "/var/vmaildb/user.db";

/** Schema v1 of the account DB (every column the Exim and Dovecot queries use). */
export const ACCOUNT_SCHEMA_V1 = `CREATE TABLE IF NOT EXISTS account (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  localpart VARCHAR(128) NOT NULL COLLATE NOCASE,
  domain    VARCHAR(128) NOT NULL COLLATE NOCASE,
  password  VARCHAR(255) NOT NULL,
  realname  VARCHAR(64)  NULL,
  active    INTEGER      NOT NULL DEFAULT 1,
  quota     INTEGER      NOT NULL DEFAULT 0,
  filter    BLOB         NULL,
  UNIQUE (localpart, domain),
  CHECK (localpart NOT LIKE '.%' AND instr(localpart, '/') = 0)
);`;

/** The relays' copy of the account DB: what their routers read (existence by localpart/domain; active for the record). */
export const RELAY_ACCOUNT_COLUMNS = ["id", "localpart", "domain", "active"];
export const RELAY_ACCOUNT_SCHEMA = `CREATE TABLE account (
  id        INTEGER PRIMARY KEY,
  localpart VARCHAR(128) NOT NULL COLLATE NOCASE,
  domain    VARCHAR(128) NOT NULL COLLATE NOCASE,
  active    INTEGER      NOT NULL DEFAULT 1,
  UNIQUE (localpart, domain)
);`;

function accountDbPart(cfg: StackConfig): Partial<HostPlan> {
    const steps: StepSpec[] = [
        {
            name: "account-db-schema",
            after: ["packages", "users", "directories"],
            // Creates or migrates the schema; never deletes rows.
            script: [
                `db=${ACCOUNT_DB}`,
                `v=$(sqlite3 "$db" 'PRAGMA user_version;')`,
                `if [ "$v" -lt 1 ]; then sqlite3 "$db" <<'SQL'`,
                `BEGIN;`,
                ACCOUNT_SCHEMA_V1,
                `PRAGMA user_version = 1;`,
                `COMMIT;`,
                `SQL`,
                `fi`,
                `chown root:vmail "$db"; chmod 0640 "$db"`,
                `echo "account DB schema version $(sqlite3 "$db" 'PRAGMA user_version;')"`,
            ].join("\n"),
        },
        // before the smoke account and the first push: a rebuilt store comes back with its accounts
        ...restoreOnRebuildStep(cfg),
    ];
    if (cfg.smoke.enabled) {
        const [smokeLocal, smokeDomain] = cfg.smoke.account.split("@");
        steps.push({
            name: "smoke-account",
            after: ["files"],
            secretStdin: "smokePassword",
            // the password arrives on stdin; only its salted hash is stored
            script: [
                `pw=$(cat)`,
                `hash="{SHA512-CRYPT}$(printf '%s' "$pw" | openssl passwd -6 -stdin)"`,
                `sqlite3 ${ACCOUNT_DB} <<SQL`,
                `INSERT INTO account (localpart, domain, password, realname, quota) VALUES ('${smokeLocal}', '${smokeDomain}', '$hash', 'mailinfra smoke test', 0)`,
                `  ON CONFLICT (localpart, domain) DO UPDATE SET password = excluded.password, active = 1;`,
                `SQL`,
            ].join("\n"),
        });
    }
    return {
        packages: ["sqlite3"],
        directories: [{ path: "/var/vmaildb", mode: "2750", owner: "root", group: "vmail" }],
        steps,
    };
}

export function planImap(cfg: StackConfig, host: string): HostPlan {
    const data = { ...templateData(cfg, host), inboundHosts: ["127.0.0.1", "::1", ...storeInboundHosts(cfg)] };
    return mergePlans(
        emptyPlan(host, "imap"),
        basePart(cfg, host),
        eximPart("imap/etc/exim4/exim4.conf.ejs", { ...data, submission: cfg.mail.submission }),
        {
            packages: ["dovecot-imapd", "dovecot-sqlite"],
            users: [{ name: "vmail", home: "/var/vmail", system: true }],
            groupMemberships: [{ user: "Debian-exim", group: "vmail" }],
            directories: [{ path: "/var/vmail", mode: "2770", owner: "root", group: "vmail" }],
            files: [
                {
                    path: "/etc/dovecot/dovecot.conf",
                    content: render("imap/etc/dovecot/dovecot.conf.ejs", data),
                    mode: "0644",
                    owner: "root",
                    group: "root",
                    validate: `doveconf -n -c "$NEW" >/dev/null`,
                    notify: ["dovecot"],
                },
                {
                    path: "/etc/dovecot/dovecot-sql.conf.ext",
                    content: render("imap/etc/dovecot/dovecot-sql.conf.ext.ejs", data),
                    mode: "0600",
                    owner: "root",
                    group: "root",
                    notify: ["dovecot"],
                },
            ],
            services: [{ name: "dovecot", onChange: "restart" }],
            ports: [
                // unauthenticated mail only from the relays and lily (Exim's inbound_hosts too); users submit on 465/587
                { port: 25, from: storeInboundHosts(cfg), service: "smtp from the relays and the secondary MX" },
                { port: 465, from: "all", service: "submission (smtps)" },
                { port: 587, from: "all", service: "submission" },
                { port: 993, from: "all", service: "imaps" },
            ],
        },
        accountDbPart(cfg),
        userdbPushPart(cfg),
        storeDeliveryPart(cfg),
        storeMaintenancePart(cfg),
        backupPart(cfg),
        knownHostsPart(cfg, host),
    );
}


/** Files Exim's store routers read: default user filter, quota warning, user-left templates, Maildir provisioning (run by the DB push). */
function storeDeliveryPart(cfg: StackConfig): Partial<HostPlan> {
    const data = { postmaster: cfg.mail.postmaster };
    const eximFile = (path: string, template: string) => ({
        path,
        content: render(template, data),
        mode: "0644",
        owner: "root",
        group: "root",
    });
    return {
        // per-user templates /etc/exim4/userleft/<domain>/<localpart> are written by the admin tool
        directories: [{ path: "/etc/exim4/userleft", mode: "0755", owner: "root", group: "root" }],
        files: [
            // checked as an Exim filter before it goes live (a broken default filter would skip every account's filter)
            { ...eximFile("/etc/exim4/default_user_filter", "imap/etc/exim4/default_user_filter.ejs"), validate: `exim4 -bf "$NEW" </dev/null >/dev/null` },
            eximFile("/etc/exim4/quota_warn_message", "imap/etc/exim4/quota_warn_message.ejs"),
            eximFile("/etc/exim4/userleft/TEMPLATE", "imap/etc/exim4/userleft/TEMPLATE.ejs"),
            lsearchFile("/etc/exim4/submission_senders", "addresses each account may send as besides its own: the aliases that point to it (mail.aliases)", submissionSenders(cfg)),
            lsearchFile("/etc/exim4/submission_ratelimits", "messages per hour of accounts whose limit differs from mail.submission.messagesPerHour", submissionRateLimits(cfg)),
            scriptFile("/usr/local/sbin/mailinfra-provision-maildirs", "imap/usr/local/sbin/mailinfra-provision-maildirs.ejs", {}),
        ],
    };
}

/** account → the alias addresses that point to it (one level; "*" catch-alls excluded), for the submission sender check. */
export function submissionSenders(cfg: StackConfig): Record<string, string[]> {
    const out: Record<string, string[]> = {};
    for (const [domain, entries] of Object.entries(cfg.mail.aliases))
        for (const [local, targets] of Object.entries(entries)) {
            if (local === "*") continue;
            for (const t of targets) {
                if (t.startsWith(":") || t.startsWith("|")) continue;
                const account = (t.includes("@") ? t : `${t}@${domain}`).toLowerCase();
                if (!cfg.mail.localDomains.includes(account.split("@")[1])) continue;
                (out[account] ??= []).push(`${local}@${domain}`.toLowerCase());
            }
        }
    return out;
}

export function submissionRateLimits(cfg: StackConfig): Record<string, string[]> {
    return Object.fromEntries(Object.entries(cfg.mail.submission.accountLimits).map(([a, n]) => [a.toLowerCase(), [String(n)]]));
}

/** An Exim lsearch file "key: value : value" from validated addresses (schema: mailbox patterns only). */
function lsearchFile(path: string, what: string, entries: Record<string, string[]>): FileSpec {
    const lines = Object.entries(entries)
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([k, v]) => `${k}: ${[...new Set(v)].join(" : ")}`);
    return { path, content: `# ${what}; rendered by mailinfra from stack config\n${lines.join("\n")}${lines.length ? "\n" : ""}`, mode: "0644", owner: "root", group: "root" };
}

/** Pushes the account DB to the relays: on every change (systemd path unit), every 15 min (cron), and during converge. */
function userdbPushPart(cfg: StackConfig): Partial<HostPlan> {
    const relays = hostsWithRole(cfg, "relay").map(([name]) => fqdnOf(cfg, name));
    const unit = (name: string) => ({
        path: `/etc/systemd/system/${name}`,
        content: render(`imap/etc/systemd/system/${name}.ejs`, {}),
        mode: "0644",
        owner: "root",
        group: "root",
        notify: ["mailinfra-push-userdb.path"],
    });
    return {
        packages: ["openssh-client"],
        files: [
            {
                path: "/root/.ssh/mailinfra-userdb",
                content: "(rendered from secrets)",
                secret: true,
                fromSecrets: { names: ["userdbSyncKey"], render: (s) => `${s.userdbSyncKey.trim()}\n` },
                mode: "0600",
                owner: "root",
                group: "root",
            },
            scriptFile("/usr/local/sbin/mailinfra-push-userdb", "imap/usr/local/sbin/mailinfra-push-userdb.ejs", {
                relays,
                syncUser: USERDB_SYNC_USER,
                relayColumns: RELAY_ACCOUNT_COLUMNS,
                relaySchema: RELAY_ACCOUNT_SCHEMA,
            }),
            unit("mailinfra-push-userdb.service"),
            unit("mailinfra-push-userdb.path"),
        ],
        cron: [{ name: "mailinfra-push-userdb", schedule: "*/15 * * * *", user: "root", command: "/usr/local/sbin/mailinfra-push-userdb >/dev/null" }],
        services: [{ name: "mailinfra-push-userdb.path", onChange: "restart" }],
        steps: [{ name: "push-userdb", after: ["files", "peers"], script: "/usr/local/sbin/mailinfra-push-userdb" }],
    };
}
