// Per-role planners: stack config → HostPlan. Each host is composed from parts (base, Exim core +
// role routers, Dovecot, account DB) so a role cannot pick an invalid mix of them.
import { fqdnOf, hostsWithRole, Role, StackConfig } from "./config";
import { emptyPlan, eximList, FileSpec, HostPlan, mergePlans, render, StepSpec } from "./plan";

const SNAKEOIL = { certificate: "/etc/ssl/certs/ssl-cert-snakeoil.pem", privateKey: "/etc/ssl/private/ssl-cert-snakeoil.key" };

const EXIM_VALIDATE = `exim4 -bV -C "$NEW" >/dev/null`;

function roleHost(cfg: StackConfig, role: Role): string | undefined {
    const found = hostsWithRole(cfg, role)[0];
    return found ? fqdnOf(cfg, found[0]) : undefined;
}

function templateData(cfg: StackConfig, host: string) {
    return {
        fqdn: fqdnOf(cfg, host),
        role: cfg.hosts[host].role,
        ownNetworksList: eximList(cfg.mail.ownNetworks),
        list: eximList,
        tls: SNAKEOIL,
        localDomains: cfg.mail.localDomains,
        relayDomains: cfg.mail.relayDomains,
        rtDomains: cfg.mail.rtDomains,
        postmaster: cfg.mail.postmaster,
        relayHost: roleHost(cfg, "relay"),
        imapHost: roleHost(cfg, "imap"),
        rtHost: roleHost(cfg, "rt"),
    };
}

/** Every host: identity files and the packages every role needs. */
function basePart(cfg: StackConfig, host: string): Partial<HostPlan> {
    const fqdn = fqdnOf(cfg, host);
    return {
        packages: ["ca-certificates", "ssl-cert", "cron"],
        files: [{ path: "/etc/mailname", content: `${fqdn}\n`, mode: "0644", owner: "root", group: "root", keepOnDelete: true }],
    };
}

/** Exim with a complete, hand-written /etc/exim4/exim4.conf (Debian's generated config is bypassed). */
function eximPart(template: string, data: Record<string, unknown>): Partial<HostPlan> {
    return {
        packages: ["exim4-daemon-heavy"],
        // Debian-exim reads the TLS key through the ssl-cert group
        groupMemberships: [{ user: "Debian-exim", group: "ssl-cert" }],
        files: [
            {
                path: "/etc/exim4/exim4.conf",
                content: render(template, data),
                mode: "0644",
                owner: "root",
                group: "root",
                validate: EXIM_VALIDATE,
                notify: ["exim4"],
            },
        ],
        // restart, not reload: a new daemon also picks up new group memberships (ssl-cert, vmail)
        services: [{ name: "exim4", onChange: "restart" }],
    };
}

/** One lsearch alias file per domain; every line must be "key: target, ...". */
export function aliasFiles(cfg: StackConfig): FileSpec[] {
    return Object.entries(cfg.mail.aliases).map(([domain, entries]) => {
        const body = Object.entries(entries)
            .sort(([a], [b]) => (a === "*" ? 1 : b === "*" ? -1 : a.localeCompare(b)))
            .map(([local, targets]) => `${local}: ${targets.join(", ")}`)
            .join("\n");
        return {
            path: `/etc/exim4/aliases/${domain}`,
            content: `# Aliases for ${domain}, rendered by mailinfra from stack config.\n${body}\n`,
            mode: "0644",
            owner: "root",
            group: "root",
            validate: `awk '/^[[:space:]]*(#|$)/{next} !/^[^[:space:]:]+:[[:space:]]*[^[:space:]]/{printf "line %d is not \\"key: target\\": %s\\n", NR, $0; bad=1} END{exit bad}' "$NEW"`,
        };
    });
}

export function planRelay(cfg: StackConfig, host: string): HostPlan {
    const data = templateData(cfg, host);
    return mergePlans(emptyPlan(host, "relay"), basePart(cfg, host), eximPart("relay/etc/exim4/exim4.conf.ejs", data), {
        directories: [{ path: "/etc/exim4/aliases", mode: "0755", owner: "root", group: "root" }],
        // content scanning writes temporary mbox files here (seed: tmpfs for speed)
        mounts: [{ path: "/var/spool/exim4/scan", owner: "Debian-exim", group: "Debian-exim", mode: "0750", size: "256m" }],
        files: aliasFiles(cfg),
    });
}

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
    );
}

/** Lists, OTRS and RT hosts until their role issues land: a satellite Exim sending via the relay. */
export function planSatellite(cfg: StackConfig, host: string): HostPlan {
    const data = templateData(cfg, host);
    return mergePlans(emptyPlan(host, cfg.hosts[host].role), basePart(cfg, host), eximPart("satellite/etc/exim4/exim4.conf.ejs", data));
}

export function planHost(cfg: StackConfig, host: string): HostPlan {
    switch (cfg.hosts[host].role) {
        case "relay":
            return planRelay(cfg, host);
        case "imap":
            return planImap(cfg, host);
        default:
            return planSatellite(cfg, host);
    }
}

export function planFleet(cfg: StackConfig): HostPlan[] {
    return Object.keys(cfg.hosts)
        .sort()
        .map((h) => planHost(cfg, h));
}
