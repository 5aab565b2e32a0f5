// The mail relay (seed: mchenry): Exim with the seed's routers and ACLs, SpamAssassin, aliases,
// a local caching resolver, the bulk (wiki) interface and the receiving end of the account-DB push.
import { fqdnOf, hostsWithRole, StackConfig } from "../config";
import { emptyPlan, FileSpec, HostPlan, mergePlans, render, scriptFile } from "../plan";
import { basePart, eximPart, templateData } from "../parts/common";
import { inboundFilterPart, resolverPart, spamassassinPart, spamPolicyData } from "../parts/relayServices";
import { bayesReceiverPart } from "../parts/storeMaintenance";
import { sshFromStore } from "../parts/firewall";
import { RELAY_ACCOUNT_COLUMNS } from "./imap";

export const USERDB_SYNC_USER = "userdb-sync";

/** One lsearch alias file per domain; every line must be "key: target, ...". */
export function aliasFiles(cfg: StackConfig): FileSpec[] {
    return Object.entries(cfg.mail.aliases).map(([domain, entries]) => {
        const body = Object.entries(entries)
            .sort(([a], [b]) => (a === "*" ? 1 : b === "*" ? -1 : a.localeCompare(b)))
            // :fail:/:defer: text runs to the end of the line; a pipe command with spaces needs quotes
            .map(([local, targets]) => `${local}: ${targets.map((t) => (t.startsWith("|") && /[\s,]/.test(t) ? `"${t}"` : t)).join(", ")}`)
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

/** Exim's secrets (LDAP bind password, OTRS DB servers), readable by Debian-exim only. */
function eximSecretsFile(cfg: StackConfig): FileSpec | undefined {
    const { ldap, otrs } = cfg.relay;
    if (!ldap && !otrs) return undefined;
    const names = [...(ldap ? (["ldapPassword"] as const) : []), ...(otrs ? (["otrsDbPassword"] as const) : [])];
    return {
        path: "/etc/exim4/secrets.conf",
        content: "(rendered from secrets)",
        secret: true,
        fromSecrets: {
            names: [...names],
            render: (s) => {
                for (const n of names)
                    if (!/^[A-Za-z0-9._+-]{8,128}$/.test(s[n] ?? ""))
                        throw new Error(`mailinfra:${n} must be 8-128 characters of A-Z a-z 0-9 . _ + - (it is embedded in Exim lookups)`);
                return [
                    "# rendered by mailinfra from Pulumi secrets",
                    ldap ? `LDAPPASSWORD = ${s.ldapPassword}` : "",
                    otrs ? `hide mysql_servers = ${otrs.servers.map((h) => `${h}/${otrs.database}/${otrs.user}/${s.otrsDbPassword}`).join(" : ")}` : "",
                    "",
                ]
                    .filter((l, i, a) => l !== "" || i === a.length - 1)
                    .join("\n");
            },
        },
        mode: "0640",
        owner: "root",
        group: "Debian-exim",
        notify: ["exim4"],
    };
}

export function relayTemplateData(cfg: StackConfig, host: string) {
    const r = cfg.relay;
    const otrsHost = hostsWithRole(cfg, "otrs")[0];
    return {
        ...templateData(cfg, host),
        legacyMailmanDomains: cfg.mail.legacyMailmanDomains,
        wiki: r.wikiInterface ? { interface: r.wikiInterface, helo: r.wikiHelo, sender: r.wikiSender } : undefined,
        ldap: r.ldap,
        otrs: r.otrs && otrsHost ? { ...r.otrs, host: fqdnOf(cfg, otrsHost[0]) } : undefined,
        legacyLists: r.legacyMailingLists.length ? { domain: r.listsDomain } : undefined,
        internalSenders: r.internalSenderDomain ? { domain: r.internalSenderDomain, rewrite: r.internalSenderRewrite } : undefined,
        spam: spamPolicyData(cfg),
    };
}

function userdbReceiverPart(cfg: StackConfig): Partial<HostPlan> {
    return {
        packages: ["sqlite3"],
        users: [{ name: USERDB_SYNC_USER, home: `/var/lib/${USERDB_SYNC_USER}`, group: "Debian-exim", createHome: true, system: true }],
        directories: [
            { path: "/var/vmaildb", mode: "2750", owner: USERDB_SYNC_USER, group: "Debian-exim" },
            { path: `/var/lib/${USERDB_SYNC_USER}/.ssh`, mode: "0700", owner: USERDB_SYNC_USER, group: "Debian-exim" },
        ],
        files: [
            scriptFile("/usr/local/sbin/mailinfra-receive-userdb", "relay/usr/local/sbin/mailinfra-receive-userdb.ejs", { columns: RELAY_ACCOUNT_COLUMNS }),
            {
                // only the store's sync key, and only to run the receiver
                path: `/var/lib/${USERDB_SYNC_USER}/.ssh/authorized_keys`,
                content: `restrict,command="/usr/local/sbin/mailinfra-receive-userdb" ${cfg.mail.userdbSyncPublicKey}\n`,
                mode: "0600",
                owner: USERDB_SYNC_USER,
                group: "Debian-exim",
            },
        ],
        ports: [sshFromStore(cfg, "account DB push")],
    };
}

export function planRelay(cfg: StackConfig, host: string): HostPlan {
    const data = relayTemplateData(cfg, host);
    const secrets = eximSecretsFile(cfg);
    const exim = eximPart("relay/etc/exim4/exim4.conf.ejs", data);
    exim.files![0].requires = secrets ? [secrets.path] : [];
    const r = cfg.relay;
    return mergePlans(
        emptyPlan(host, "relay"),
        basePart(cfg, host),
        { files: secrets ? [secrets] : [] },
        exim,
        {
            directories: [{ path: "/etc/exim4/aliases", mode: "0755", owner: "root", group: "root" }],
            // Exim's daemon_smtp_ports (relay/etc/exim4/exim4.conf.ejs): the MX for the internet
            ports: [
                { port: 25, from: "all", service: "smtp (MX)" },
                { port: 465, from: "all", service: "smtps" },
            ],
            files: [
                ...(r.legacyMailingLists.length
                    ? [
                          {
                              path: "/etc/exim4/legacy_mailing_lists",
                              content: `# list names still addressed on legacy domains (rendered by mailinfra)\n${r.legacyMailingLists.join("\n")}\n`,
                              mode: "0644",
                              owner: "root",
                              group: "root",
                          },
                      ]
                    : []),
                ...aliasFiles(cfg),
            ],
        },
        inboundFilterPart(),
        userdbReceiverPart(cfg),
        spamassassinPart(cfg),
        resolverPart(cfg),
        wikiInterfacePart(cfg, host),
        bayesReceiverPart(cfg),
    );
}

/** The bulk-mail address, added next to the host's own address (and again at every boot). */
function wikiInterfacePart(cfg: StackConfig, host: string): Partial<HostPlan> {
    const wiki = cfg.relay.wikiInterface;
    if (!wiki) return {};
    const data = { wiki, primary: cfg.hosts[host].address };
    return {
        files: [
            {
                path: "/usr/local/sbin/mailinfra-wiki-address",
                content: render("relay/usr/local/sbin/mailinfra-wiki-address.ejs", data),
                mode: "0755",
                owner: "root",
                group: "root",
                validate: `sh -n "$NEW"`,
                notify: ["mailinfra-wiki-address"],
            },
            {
                path: "/etc/systemd/system/mailinfra-wiki-address.service",
                content: render("relay/etc/systemd/system/mailinfra-wiki-address.service.ejs", data),
                mode: "0644",
                owner: "root",
                group: "root",
                notify: ["mailinfra-wiki-address"],
            },
        ],
        services: [{ name: "mailinfra-wiki-address", onChange: "restart" }],
    };
}
