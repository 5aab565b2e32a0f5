// The OTRS host: Znuny from Debian (bookworm-backports, non-free) with its ticket DB in MariaDB, the relays'
// SELECT-only DB account (per relay address), and Exim handing queue mail to Znuny's mail gateway.
import { hostsWithRole, StackConfig } from "../config";
import { emptyPlan, FileSpec, HostPlan, mergePlans, render } from "../plan";
import { apacheHttpsPart } from "../parts/apache";
import { basePart, eximPart, templateData } from "../parts/common";

/** Debian's Znuny install (otrs2 package): home of the otrs user and its console. */
export const ZNUNY_HOME = "/usr/share/otrs";
export const ZNUNY_CONSOLE = `${ZNUNY_HOME}/bin/otrs.Console.pl`;
export const POSTMASTER_COMMAND = `${ZNUNY_CONSOLE} Maint::PostMaster::Read`;
export const BACKPORTS_LIST = "/etc/apt/sources.list.d/mailinfra-backports.list";

const DEFAULT_DATABASE = "otrs";
const DEFAULT_RELAY_USER = "exim";

/** Hosts that look queue addresses up in the ticket DB: the relay and the secondary MX. */
export function ticketDbClients(cfg: StackConfig): string[] {
    return [...hostsWithRole(cfg, "relay"), ...hostsWithRole(cfg, "lists")].map(([, h]) => h.address);
}

const sq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

export function planOtrs(cfg: StackConfig, host: string): HostPlan {
    const database = cfg.relay.otrs?.database ?? DEFAULT_DATABASE;
    const relayUser = cfg.relay.otrs?.user ?? DEFAULT_RELAY_USER;
    const domains = cfg.relay.otrs?.domains ?? [];
    const clients = ticketDbClients(cfg);
    const lookup = cfg.relay.otrs ? { user: relayUser } : undefined;
    const data = { ...templateData(cfg, host), domains, relays: clients, database, lookup, postmasterCommand: POSTMASTER_COMMAND };
    const exim = eximPart("otrs/etc/exim4/exim4.conf.ejs", data);
    const secrets = lookup ? localLookupSecrets(database, relayUser) : undefined;
    exim.files![0].requires = secrets ? [secrets.path] : [];
    return mergePlans(emptyPlan(host, "otrs"), basePart(cfg, host), { files: secrets ? [secrets] : [] }, exim, {
        // libdbd-mysql-perl first: otrs2 depends on "libdbd-pg-perl | libdbd-mysql-perl", apt picks Pg, and
        // the otrs2 postinst then dies with "install_driver(mysql) failed" (found on bookworm, 6.5.15-2~bpo12+1)
        packages: ["mariadb-server", "libdbd-mysql-perl"],
        // otrs2's dbconfig-common: MariaDB over the socket as root, our DB name (the relays query it)
        debconf: [
            "otrs2 otrs2/dbconfig-install boolean true",
            "otrs2 otrs2/database-type select mysql",
            "otrs2 otrs2/mysql/method select Unix socket",
            `otrs2 otrs2/db/dbname string ${database}`,
        ].join("\n"),
        // exactly as otrs2's preinst creates it; needed before the package because Exim's config names it
        users: [{ name: "otrs", home: ZNUNY_HOME, group: "www-data", system: true }],
        files: [
            {
                path: BACKPORTS_LIST,
                content: "# rendered by mailinfra: Znuny (znuny/otrs2) comes from bookworm-backports non-free; only packages asked for by name\ndeb http://deb.debian.org/debian bookworm-backports non-free\n",
                mode: "0644",
                owner: "root",
                group: "root",
                validate: `grep -Eq '^deb https?://[^ ]+ bookworm-backports non-free$' "$NEW"`,
            },
            {
                path: "/etc/mysql/mariadb.conf.d/60-mailinfra.cnf",
                content: render("otrs/etc/mysql/mariadb.conf.d/60-mailinfra.cnf.ejs", { address: cfg.hosts[host].address }),
                mode: "0644",
                owner: "root",
                group: "root",
                validate: `my_print_defaults --defaults-file="$NEW" mysqld | grep -q '^--bind-address='`,
                notify: ["mariadb"],
            },
        ],
        steps: [
            { name: "znuny", script: znunyInstallScript(), after: ["files"] },
            ...(cfg.relay.otrs ? [{ name: "ticket-db-accounts", script: dbAccountsScript(database, relayUser, [...clients, "localhost"]), secretStdin: "otrsDbPassword" as const, after: ["files" as const] }] : []),
            ...(cfg.tickets.otrs.queueAddresses.length ? [{ name: "queue-addresses", script: queueAddressesScript(cfg), after: ["files" as const] }] : []),
        ],
        services: [{ name: "mariadb", onChange: "restart" }],
        ports: [
            // Exim's ACL accepts queue mail from these hosts only, MariaDB has accounts for them only
            { port: 25, from: clients, service: "smtp from the relays (queue mail)" },
            ...(cfg.relay.otrs ? [{ port: 3306, from: clients, service: "ticket DB lookups from the relays" }] : []),
        ],
    },
    // after the znuny step: otrs2's postinst enables its snippet (/otrs, /otrs-web) and modules
    apacheHttpsPart(cfg, host, { app: "Znuny (otrs2)", landing: "/otrs/index.pl" }));
}

/** The local Exim's DB credentials: the relays' account name and password, granted to localhost (socket). */
function localLookupSecrets(database: string, user: string): FileSpec {
    return {
        path: "/etc/exim4/secrets.conf",
        content: "(rendered from secrets)",
        secret: true,
        fromSecrets: {
            names: ["otrsDbPassword"],
            render: (s) => {
                if (!/^[A-Za-z0-9._+-]{8,128}$/.test(s.otrsDbPassword ?? ""))
                    throw new Error("mailinfra:otrsDbPassword must be 8-128 characters of A-Z a-z 0-9 . _ + - (it is embedded in Exim lookups)");
                return `# rendered by mailinfra from Pulumi secrets\nhide mysql_servers = localhost(/run/mysqld/mysqld.sock)/${database}/${user}/${s.otrsDbPassword}\n`;
            },
        },
        mode: "0640",
        owner: "root",
        group: "Debian-exim",
        notify: ["exim4"],
    };
}

/** Znuny from backports, pinned by name (its dependencies come from bookworm). */
function znunyInstallScript(): string {
    return `set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
installed() { dpkg-query -W -f='\${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'; }
if installed znuny && installed otrs2; then exit 0; fi
apt_opts="-o Acquire::http::Timeout=30 -o Acquire::Retries=3"
for try in 1 2 3; do timeout 120 apt-get $apt_opts -q update >/dev/null && break; sleep 2; done
start=$(date +%s)
timeout 1200 apt-get $apt_opts install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold znuny/bookworm-backports otrs2/bookworm-backports 2>&1 | grep -E '^(E:|dpkg:|Error)' || true
installed znuny && installed otrs2 || { echo "znuny did not install (see apt output above)" >&2; exit 1; }
echo "znuny installed in $(( $(date +%s) - start )) s"
`;
}

/**
 * The relays' account: SELECT on system_address only, one per relay address and one for the local Exim
 * (localhost = the socket); any other address is refused at login. Password from the secret on stdin.
 */
function dbAccountsScript(database: string, user: string, clients: string[]): string {
    const tbl = `${database}.system_address`; // both names match ^[A-Za-z0-9_]+$ (config schema)
    return `set -euo pipefail
IFS= read -r pw || [ -n "$pw" ]
[[ "$pw" =~ ^[A-Za-z0-9._+-]{8,128}$ ]] || { echo "mailinfra:otrsDbPassword: must be 8-128 characters of A-Z a-z 0-9 . _ + -" >&2; exit 1; }
clients=(${clients.map(sq).join(" ")})
{
  echo "DROP USER IF EXISTS 'Debian-exim'@'localhost';"
  for c in "\${clients[@]}"; do
    echo "CREATE USER IF NOT EXISTS '${user}'@'$c' IDENTIFIED BY '$pw';"
    echo "ALTER USER '${user}'@'$c' IDENTIFIED BY '$pw';"
    echo "REVOKE ALL PRIVILEGES, GRANT OPTION FROM '${user}'@'$c';"
    echo "GRANT SELECT ON ${tbl} TO '${user}'@'$c';"
  done
} | mariadb --batch
# an address that is no longer a relay loses its account
mariadb --batch --skip-column-names -e "SELECT host FROM mysql.user WHERE user='${user}'" | while read -r h; do
  case " \${clients[*]} " in *" $h "*) ;; *) echo "dropping ${user}@$h"; mariadb -e "DROP USER '${user}'@'$h'" ;; esac
done
`;
}

/** Queue addresses from config, added through Znuny's console when missing (Znuny owns them afterwards). */
function queueAddressesScript(cfg: StackConfig): string {
    const lines = cfg.tickets.otrs.queueAddresses.map((q) => `add ${sq(q.address.toLowerCase())} ${sq(q.name)} ${sq(q.queue)}`);
    return `set -euo pipefail
console() { runuser -u otrs -- ${ZNUNY_CONSOLE} "$@"; }
add() {
  local n
  n=$(mariadb --batch --skip-column-names -e "SELECT COUNT(*) FROM system_address WHERE value0='$1'" ${sq(cfg.relay.otrs?.database ?? DEFAULT_DATABASE)})
  [ "$n" = 0 ] || return 0
  console Admin::SystemAddress::Add --email-address "$1" --name "$2" --queue-name "$3" --no-ansi
}
${lines.join("\n")}
`;
}
