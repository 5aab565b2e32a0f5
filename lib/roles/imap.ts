// The IMAP store (seed: sanger).
import { StackConfig } from "../config";
import { emptyPlan, HostPlan, mergePlans, render, scriptFile, StepSpec } from "../plan";
import { fqdnOf, hostsWithRole } from "../config";
import { basePart, eximPart, templateData } from "../parts/common";
import { USERDB_SYNC_USER } from "./relay";
import { storeMaintenancePart } from "../parts/storeMaintenance";
import { backupPart, restoreOnRebuildStep } from "../parts/backup";
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
    const data = templateData(cfg, host);
    return mergePlans(
        emptyPlan(host, "imap"),
        basePart(cfg, host),
        eximPart("imap/etc/exim4/exim4.conf.ejs", data),
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
            scriptFile("/usr/local/sbin/mailinfra-provision-maildirs", "imap/usr/local/sbin/mailinfra-provision-maildirs.ejs", {}),
        ],
    };
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
            scriptFile("/usr/local/sbin/mailinfra-push-userdb", "imap/usr/local/sbin/mailinfra-push-userdb.ejs", { relays, syncUser: USERDB_SYNC_USER }),
            unit("mailinfra-push-userdb.service"),
            unit("mailinfra-push-userdb.path"),
        ],
        cron: [{ name: "mailinfra-push-userdb", schedule: "*/15 * * * *", user: "root", command: "/usr/local/sbin/mailinfra-push-userdb >/dev/null" }],
        services: [{ name: "mailinfra-push-userdb.path", onChange: "restart" }],
        steps: [{ name: "push-userdb", after: ["files", "peers"], script: "/usr/local/sbin/mailinfra-push-userdb" }],
    };
}
