// Typed stack configuration, validated before any resource is registered.
// Pure: no Pulumi imports, so tests and the CLI helpers can use it directly.
import Ajv, { ErrorObject } from "ajv";
import { isIPv4, isIPv6 } from "net";
import addFormats from "ajv-formats";
import * as fs from "fs";
import { HOST_KEY_PATTERN, parseHostKey, parseKnownHosts, pinCommand } from "./hostKeys";

export const ROLES = ["relay", "imap", "lists", "otrs", "rt"] as const;
export type Role = (typeof ROLES)[number];

export interface HostConfig {
    /** IPv4 address the program connects to over SSH and publishes in DNS. */
    address: string;
    role: Role;
    /** Fully qualified host name; defaults to <name>.<mail.hostDomain>. */
    fqdn?: string;
    /** The host's SSH host public keys ("ssh-ed25519 AAAA…"), the only keys any SSH client of the fleet accepts for it.
     *  Required (here or through ssh.hostKeysFile); recorded by `npm run pin-host`. No default. */
    sshHostKeys?: string[];
}

export interface SshConfig {
    user: string;
    port: number;
    /** Key file on the machine that runs Pulumi; otherwise the secret mailinfra:sshPrivateKey or ssh-agent. */
    privateKeyPath?: string;
    /** Required, no default: the only networks (CIDR) the hosts' firewalls accept SSH from, besides the
     *  host-to-host SSH the plan itself needs; must contain the machine that runs Pulumi. */
    adminNetworks: string[];
    /** known_hosts-style file whose keys are added to hosts.*.sshHostKeys, matched by host address
     *  (the lab: written by lab/lab.sh for every host it creates). Default: none. */
    hostKeysFile?: string;
}

export interface MailConfig {
    /** Domain of the host names (mchenry.<hostDomain>). */
    hostDomain: string;
    /** Networks trusted as our own (the seed's wikimedia_nets): relaying, reserved slots, no spam scan. */
    ownNetworks: string[];
    /** Domains whose mail the relay processes locally (aliases, accounts, queues). */
    localDomains: string[];
    /** Domains the MX hosts accept and pass on by DNS (the seed's relay_domains file). */
    relayDomains: string[];
    /** Old domains whose list addresses are rewritten to the lists domain. */
    legacyMailmanDomains: string[];
    /** Domains handled by the RT host. */
    rtDomains: string[];
    /** Aliases per local domain: local part (or "*") → targets (addresses, :fail:, :defer:, |pipes). */
    aliases: Record<string, Record<string, string[]>>;
    /** Address that receives postmaster mail for every local domain. */
    postmaster: string;
    /** Public half of the key the IMAP store pushes its account DB to the relays with (private half: secret userdbSyncKey). */
    userdbSyncPublicKey: string;
    /** Public half of the key the store's nightly Bayes training reaches the relays' sa-learn with (private half: secret bayesLearnKey). Unset: no Bayes training. */
    bayesLearnPublicKey?: string;
    /** Authenticated submission on the store (SMTP AUTH on 465/587). */
    submission: SubmissionConfig;
}

export interface SubmissionConfig {
    /** Messages one account may submit per hour (Exim ratelimit, smoothed); more get 451 until the rate falls. Default 100. */
    messagesPerHour: number;
    /** Per-account overrides of messagesPerHour: account address → messages per hour. */
    accountLimits: Record<string, number>;
}

export interface SmokeConfig {
    enabled: boolean;
    /** How long `pulumi up` waits for the smoke message in the store's INBOX. */
    timeoutSeconds: number;
    /** Dedicated account on the IMAP store that the smoke test delivers to. */
    account: string;
}

export interface RelayConfig {
    /** Second address of the relay for wiki bulk mail: accepted only from own networks, sent from it. */
    wikiInterface?: string;
    wikiHelo?: string;
    /** Envelope sender forced on wiki mail (bounces go there). */
    wikiSender?: string;
    /** Internal host domain whose senders are rewritten (seed: *.pmtpa.wmnet). */
    internalSenderDomain?: string;
    internalSenderRewrite?: string;
    ldap?: { servers: string[]; peopleDn: string; bindDn: string; domains: string[]; googleSmarthost: string };
    otrs?: { servers: string[]; database: string; user: string; domains: string[] };
    /** Mailman list names still addressed on legacy domains, rewritten to the lists domain. */
    legacyMailingLists: string[];
    listsDomain?: string;
    spam: { maxScanSizeKb: number; headerScore: number; rejectScore: number; spamdChildren: number; customRules?: string };
    /** Upstream resolvers for the relay's own caching resolver; empty = full recursion. */
    resolverForwarders: string[];
    /** Zones unbound answers empty by default (RFC 6761/5737: test., documentation ranges) that this site really uses. */
    resolverReservedZonesInUse: string[];
}

export interface DnsConfig {
    /** "lab": the lab's unbound (records file + reload on the machine running Pulumi); "cloudflare": DnsRecord resources. */
    backend: "lab" | "cloudflare" | "none";
    /** Cloudflare zone ids by zone name (the API token is the secret mailinfra:cloudflareApiToken). */
    zoneIds: Record<string, string>;
    dmarcPolicy: "none" | "quarantine" | "reject";
}

export interface TlsConfig {
    /** PEM certificate chain for the mail hosts (public); its key is the secret mailinfra:tlsPrivateKey. Unset: Debian's snakeoil. */
    certificate?: string;
}

/** The ticket hosts' own side (issue 5): what the OTRS and RT hosts provision from stack config. */
export interface TicketsConfig {
    otrs: {
        /** Queue addresses created in the ticket system when missing (never changed or removed: the ticket system owns them). */
        queueAddresses: { address: string; name: string; queue: string }[];
    };
    rt: {
        /** RT queues, created when missing; mail to <queue>@<rt domain> and <queue>-comment@… reaches them. */
        queues: string[];
    };
}

export interface MailingListConfig {
    /** List name (local part); the list address is <name>@<lists domain>. */
    name: string;
    owner: string;
    /** Exactly these members: added and removed to match on every change. */
    members: string[];
}

export interface ListsConfig {
    /** Domain of the list addresses; defaults to relay.listsDomain. */
    domain?: string;
    /** Hosts @mx_secondary domains may be relayed to (the allowed primaries); default: the relay's address. */
    primaryMx: string[];
    lists: MailingListConfig[];
    /** Mailman's web UI (Postorius + HyperKitty, Debian's mailman3-web) behind nginx with the host's TLS certificate. */
    web: ListsWebConfig;
}

export interface ListsWebConfig {
    /** Default true; needs the secret mailinfra:mailmanWebSecret (Django key, REST password, archiver key derive from it). */
    enabled: boolean;
    /** Extra names the UI answers to (Django ALLOWED_HOSTS, nginx server_name) besides the host's FQDN and the lists domain. */
    hostnames: string[];
}

export interface BackupConfig {
    /** Stack host that receives the store's daily backups (any role but imap). */
    targetHost: string;
    /** Snapshots younger than this many days are kept on the target (the newest always). */
    keepDays: number;
    /** cron schedule of the backup on the store. */
    schedule: string;
    /** Public half of the store's backup key (private half: secret mailinfra:backupKey). */
    publicKey: string;
    /** A store converged with no accounts restores the latest backup before its first push to the relays. */
    restoreOnRebuild: boolean;
}

export interface StackConfig {
    tickets: TicketsConfig;
    lists: ListsConfig;
    /** Daily backups of the IMAP store; unset = none. */
    backup?: BackupConfig;
    tls: TlsConfig;
    dns: DnsConfig;
    relay: RelayConfig;
    ssh: SshConfig;
    hosts: Record<string, HostConfig>;
    mail: MailConfig;
    smoke: SmokeConfig;
}

const domain = { type: "string", format: "hostname", pattern: "\\." } as const;
const domainList = { type: "array", items: domain, uniqueItems: true, default: [] } as const;
const cidr = {
    type: "string",
    pattern: "^(\\d{1,3}\\.){3}\\d{1,3}/\\d{1,2}$|^[0-9a-fA-F:]+/\\d{1,3}$",
} as const;
const mailbox = { type: "string", pattern: "^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}$" } as const;
const aliasTarget = {
    type: "string",
    // a mailbox, an unqualified local part, :fail:/:defer: with one line of printable text (no " $ \\), or a pipe
    // whose command has no quotes, backslashes, "$" or shell metacharacters (it is quoted in the alias file)
    pattern: "^([A-Za-z0-9._%+-]+(@[A-Za-z0-9.-]+)?|:(fail|defer|blackhole):[\\x20\\x21\\x23\\x25-\\x5b\\x5d-\\x7e]*|\\|/[A-Za-z0-9._/+=:@%, -]+)$",
} as const;
/** An OpenSSH ed25519 public key line; the comment is a plain word (it lands in authorized_keys). */
const ed25519Key = { type: "string", pattern: "^ssh-ed25519 [A-Za-z0-9+/]+={0,2}( [A-Za-z0-9@._:+-]{1,100})?$" } as const;
/** A crontab time: five fields of digits, names, "*", ",", "-", "/" separated by spaces, or @daily and the like. */
const cronSchedule = { type: "string", pattern: "^(@(yearly|annually|monthly|weekly|daily|hourly)|([0-9A-Za-z*,/-]+ +){4}[0-9A-Za-z*,/-]+)$" } as const;

export const stackConfigSchema = {
    type: "object",
    additionalProperties: false,
    required: ["hosts", "mail"],
    properties: {
        ssh: {
            type: "object",
            additionalProperties: false,
            default: {},
            required: ["adminNetworks"],
            properties: {
                user: { type: "string", pattern: "^[a-z_][a-z0-9_-]*$", default: "root" },
                port: { type: "integer", minimum: 1, maximum: 65535, default: 22 },
                privateKeyPath: { type: "string", pattern: "^/" },
                adminNetworks: { type: "array", items: cidr, minItems: 1, uniqueItems: true },
                hostKeysFile: { type: "string", pattern: "^/" },
            },
        },
        hosts: {
            type: "object",
            minProperties: 1,
            propertyNames: { pattern: "^[a-z][a-z0-9-]{0,62}$" },
            additionalProperties: {
                type: "object",
                additionalProperties: false,
                required: ["address", "role"],
                properties: {
                    address: { type: "string", format: "ipv4" },
                    role: { enum: [...ROLES] },
                    fqdn: domain,
                    sshHostKeys: { type: "array", items: { type: "string", pattern: HOST_KEY_PATTERN }, uniqueItems: true },
                },
            },
        },
        mail: {
            type: "object",
            additionalProperties: false,
            required: ["hostDomain", "ownNetworks", "localDomains", "postmaster", "userdbSyncPublicKey"],
            properties: {
                hostDomain: domain,
                ownNetworks: { type: "array", items: cidr, minItems: 1 },
                localDomains: { ...domainList, minItems: 1 },
                relayDomains: domainList,
                legacyMailmanDomains: domainList,
                rtDomains: domainList,
                aliases: {
                    type: "object",
                    default: {},
                    propertyNames: domain,
                    additionalProperties: {
                        type: "object",
                        propertyNames: { pattern: "^([A-Za-z0-9._%+-]+|\\*)$" },
                        additionalProperties: { type: "array", items: aliasTarget, minItems: 1 },
                    },
                },
                postmaster: mailbox,
                userdbSyncPublicKey: ed25519Key,
                bayesLearnPublicKey: ed25519Key,
                submission: {
                    type: "object",
                    additionalProperties: false,
                    default: {},
                    properties: {
                        messagesPerHour: { type: "integer", minimum: 1, maximum: 100000, default: 100 },
                        accountLimits: { type: "object", default: {}, propertyNames: mailbox, additionalProperties: { type: "integer", minimum: 1, maximum: 100000 } },
                    },
                },
            },
        },
        lists: {
            type: "object",
            additionalProperties: false,
            default: {},
            properties: {
                domain,
                primaryMx: { type: "array", items: { type: "string", format: "ipv4" }, uniqueItems: true, default: [] },
                lists: {
                    type: "array",
                    default: [],
                    items: {
                        type: "object",
                        additionalProperties: false,
                        required: ["name", "owner"],
                        properties: {
                            // Mailman's listname_chars, and no list named like a suffix address
                            name: { type: "string", pattern: "^[a-z0-9][-_.0-9a-z]{0,63}$" },
                            owner: mailbox,
                            members: { type: "array", items: mailbox, uniqueItems: true, default: [] },
                        },
                    },
                },
                web: {
                    type: "object",
                    additionalProperties: false,
                    default: {},
                    properties: {
                        enabled: { type: "boolean", default: true },
                        hostnames: { type: "array", items: domain, uniqueItems: true, default: [] },
                    },
                },
            },
        },
        tls: {
            type: "object",
            additionalProperties: false,
            default: {},
            properties: {
                // PEM certificates only: base64 lines between the markers, nothing else in the file
                certificate: { type: "string", pattern: "^(-----BEGIN CERTIFICATE-----\\r?\\n([A-Za-z0-9+/=]{1,76}\\r?\\n)+-----END CERTIFICATE-----(\\r?\\n)*)+$" },
            },
        },
        dns: {
            type: "object",
            additionalProperties: false,
            default: {},
            properties: {
                backend: { enum: ["lab", "cloudflare", "none"], default: "none" },
                zoneIds: { type: "object", default: {}, propertyNames: domain, additionalProperties: { type: "string", pattern: "^[0-9a-f]{32}$" } },
                dmarcPolicy: { enum: ["none", "quarantine", "reject"], default: "none" },
            },
        },
        relay: {
            type: "object",
            additionalProperties: false,
            default: {},
            properties: {
                wikiInterface: { type: "string", format: "ipv4" },
                wikiHelo: domain,
                wikiSender: mailbox,
                internalSenderDomain: domain,
                internalSenderRewrite: mailbox,
                ldap: {
                    type: "object",
                    additionalProperties: false,
                    required: ["servers", "peopleDn", "bindDn", "domains", "googleSmarthost"],
                    properties: {
                        servers: { type: "array", items: { type: "string", format: "ipv4" }, minItems: 1 },
                        peopleDn: { type: "string", pattern: "^([a-z]+=[A-Za-z0-9-]+,)*[a-z]+=[A-Za-z0-9-]+$" },
                        bindDn: { type: "string", pattern: "^([a-z]+=[A-Za-z0-9-]+,)*[a-z]+=[A-Za-z0-9-]+$" },
                        domains: { ...domainList, minItems: 1 },
                        googleSmarthost: domain,
                    },
                },
                otrs: {
                    type: "object",
                    additionalProperties: false,
                    required: ["servers", "database", "user", "domains"],
                    properties: {
                        servers: { type: "array", items: { type: "string", format: "ipv4" }, minItems: 1 },
                        database: { type: "string", pattern: "^[A-Za-z0-9_]+$" },
                        user: { type: "string", pattern: "^[A-Za-z0-9_]+$" },
                        domains: { ...domainList, minItems: 1 },
                    },
                },
                legacyMailingLists: { type: "array", items: { type: "string", pattern: "^[a-z0-9][a-z0-9._-]*$" }, uniqueItems: true, default: [] },
                listsDomain: domain,
                spam: {
                    type: "object",
                    additionalProperties: false,
                    default: {},
                    properties: {
                        maxScanSizeKb: { type: "integer", minimum: 1, default: 400 },
                        headerScore: { type: "number", default: 1 },
                        rejectScore: { type: "number", default: 12 },
                        spamdChildren: { type: "integer", minimum: 1, maximum: 50, default: 5 },
                        customRules: { type: "string", maxLength: 65536 },
                    },
                },
                resolverForwarders: { type: "array", items: { type: "string", format: "ipv4" }, default: [] },
                resolverReservedZonesInUse: { type: "array", items: { type: "string", pattern: "^([a-z0-9-]+\\.)*[a-z0-9-]+\\.?$" }, uniqueItems: true, default: [] },
            },
        },
        tickets: {
            type: "object",
            additionalProperties: false,
            default: {},
            properties: {
                otrs: {
                    type: "object",
                    additionalProperties: false,
                    default: {},
                    properties: {
                        queueAddresses: {
                            type: "array",
                            default: [],
                            items: {
                                type: "object",
                                additionalProperties: false,
                                required: ["address", "name"],
                                properties: {
                                    address: mailbox,
                                    name: { type: "string", pattern: "^[A-Za-z0-9 ._-]{1,100}$" },
                                    // a queue the ticket system already has (Znuny ships Postmaster, Raw, Junk, Misc)
                                    queue: { type: "string", pattern: "^[A-Za-z0-9 ._-]{1,100}$", default: "Postmaster" },
                                },
                            },
                        },
                    },
                },
                rt: {
                    type: "object",
                    additionalProperties: false,
                    default: {},
                    properties: {
                        // used verbatim as Exim local parts and rt-mailgate arguments; "-comment" is the comment suffix
                        queues: { type: "array", items: { type: "string", pattern: "^(?!.*-comment$)[a-z0-9][a-z0-9_.-]*$", maxLength: 64 }, uniqueItems: true, default: [] },
                    },
                },
            },
        },
        backup: {
            type: "object",
            additionalProperties: false,
            required: ["targetHost", "publicKey"],
            properties: {
                targetHost: { type: "string", pattern: "^[a-z][a-z0-9-]{0,62}$" },
                keepDays: { type: "integer", minimum: 1, maximum: 366, default: 7 },
                schedule: { ...cronSchedule, default: "17 3 * * *" },
                publicKey: ed25519Key,
                restoreOnRebuild: { type: "boolean", default: true },
            },
        },
        smoke: {
            type: "object",
            additionalProperties: false,
            default: {},
            properties: {
                enabled: { type: "boolean", default: true },
                timeoutSeconds: { type: "integer", minimum: 5, maximum: 600, default: 90 },
                account: { ...mailbox, default: "smoke@invalid.invalid" },
            },
        },
    },
} as const;

/** The mailinfra:* keys holding structured config (everything else is a named secret). */
export const CONFIG_OBJECTS = ["ssh", "hosts", "mail", "relay", "dns", "tls", "smoke", "tickets", "lists", "backup"] as const;

export class ConfigError extends Error {
    constructor(public readonly problems: string[]) {
        super(`invalid stack config:\n  - ${problems.join("\n  - ")}`);
        this.name = "ConfigError";
    }
}

function keyOf(e: ErrorObject): string {
    const parts = e.instancePath.split("/").filter(Boolean).map((p) => p.replace(/~1/g, "/").replace(/~0/g, "~"));
    if (e.keyword === "additionalProperties") parts.push((e.params as any).additionalProperty);
    if (e.keyword === "required") parts.push((e.params as any).missingProperty);
    if (e.keyword === "propertyNames") parts.push((e.params as any).propertyName);
    const [top, ...rest] = parts;
    return top ? `mailinfra:${top}${rest.map((p) => (/^\d+$/.test(p) ? `[${p}]` : `.${p}`)).join("")}` : "mailinfra";
}

function describe(e: ErrorObject, data: unknown): string {
    const value = e.instancePath.split("/").filter(Boolean).reduce<any>((v, k) => v?.[k.replace(/~1/g, "/")], data);
    switch (e.keyword) {
        case "additionalProperties":
            return "unknown key";
        case "required":
            return "missing required key";
        case "enum":
            return `must be one of ${(e.params as any).allowedValues.join(", ")} (got ${JSON.stringify(value)})`;
        case "propertyNames":
            return "invalid name";
        default:
            return `${e.message} (got ${JSON.stringify(value)})`;
    }
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
addFormats(ajv);
const validate = ajv.compile(stackConfigSchema);

export interface ParseOptions {
    /** Stack name, for the pin command in messages. */
    stack?: string;
    /** false only for the pin command itself (it records the missing pins). Default true. */
    requirePins?: boolean;
}

/** Validates raw config (as read from Pulumi config) and returns it typed, or throws ConfigError. */
export function parseStackConfig(raw: Record<string, unknown>, opts: ParseOptions = {}): StackConfig {
    const data = structuredClone(raw);
    if (!validate(data)) {
        const problems = (validate.errors ?? [])
            .filter((e) => e.keyword !== "if")
            .map((e) => `${keyOf(e)}: ${describe(e, data)}`);
        throw new ConfigError([...new Set(problems)]);
    }
    const cfg = data as unknown as StackConfig;
    const problems = [...mergeHostKeysFile(cfg, opts.requirePins !== false), ...hostKeyProblems(cfg, opts)];
    problems.push(...semanticProblems(cfg));
    if (problems.length) throw new ConfigError(problems);
    return cfg;
}

/** Adds the keys of ssh.hostKeysFile to the pins of the hosts they name. */
function mergeHostKeysFile(cfg: StackConfig, requirePins: boolean): string[] {
    const file = cfg.ssh.hostKeysFile;
    if (!file) return [];
    let text: string;
    try {
        text = fs.readFileSync(file, "utf8");
    } catch (e) {
        // the pin command creates it
        if (!requirePins && (e as NodeJS.ErrnoException).code === "ENOENT") return [];
        return [`mailinfra:ssh.hostKeysFile: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? e}); the lab's is written by lab/lab.sh up`];
    }
    const entries = parseKnownHosts(text);
    for (const [name, h] of Object.entries(cfg.hosts)) {
        // by address only: a name may move to another machine (failover onto the spare), its address may not
        const keys = entries.filter((e) => e.names.includes(h.address)).flatMap((e) => e.keys);
        if (keys.length) h.sshHostKeys = [...new Set([...(h.sshHostKeys ?? []), ...keys])];
    }
    return [];
}

function hostKeyProblems(cfg: StackConfig, opts: ParseOptions): string[] {
    const problems: string[] = [];
    for (const [name, h] of Object.entries(cfg.hosts))
        (h.sshHostKeys ?? []).forEach((k, i) => {
            try {
                parseHostKey(k);
            } catch (e) {
                problems.push(`mailinfra:hosts.${name}.sshHostKeys[${i}]: ${(e as Error).message}`);
            }
        });
    const unpinned = Object.entries(cfg.hosts).filter(([, h]) => !h.sshHostKeys?.length).map(([name]) => name);
    if (unpinned.length && opts.requirePins !== false)
        problems.push(
            `mailinfra:hosts: no pinned SSH host key for ${unpinned.join(", ")} (hosts.<name>.sshHostKeys${cfg.ssh.hostKeysFile ? ` or ${cfg.ssh.hostKeysFile}` : ""}); ` +
                `nothing was touched. Compare each host's fingerprint out of band, then run ${pinCommand(opts.stack, unpinned)}`,
        );
    return problems;
}

function semanticProblems(cfg: StackConfig): string[] {
    const problems: string[] = [];
    const byRole = new Map<Role, string[]>();
    const byAddress = new Map<string, string>();
    for (const [name, h] of Object.entries(cfg.hosts)) {
        byRole.set(h.role, [...(byRole.get(h.role) ?? []), name]);
        const other = byAddress.get(h.address);
        if (other) problems.push(`mailinfra:hosts.${name}.address: ${h.address} is already the address of host ${other}`);
        byAddress.set(h.address, name);
    }
    for (const n of cfg.ssh.adminNetworks) {
        const problem = cidrProblem(n);
        if (problem) problems.push(`mailinfra:ssh.adminNetworks: ${n} ${problem}`);
    }
    for (const role of ["relay", "imap"] as Role[])
        if (!byRole.has(role)) problems.push(`mailinfra:hosts: no host has role "${role}" (exactly one is required)`);
    const r = cfg.relay;
    if (r.wikiInterface && (!r.wikiHelo || !r.wikiSender))
        problems.push("mailinfra:relay.wikiInterface: needs relay.wikiHelo and relay.wikiSender too");
    if (r.wikiInterface && byAddress.has(r.wikiInterface))
        problems.push(`mailinfra:relay.wikiInterface: ${r.wikiInterface} is the address of host ${byAddress.get(r.wikiInterface)}`);
    if (!!r.internalSenderDomain !== !!r.internalSenderRewrite)
        problems.push("mailinfra:relay.internalSenderDomain: needs relay.internalSenderRewrite (and the other way round)");
    if (r.legacyMailingLists.length && !r.listsDomain) problems.push("mailinfra:relay.legacyMailingLists: needs relay.listsDomain");
    if (r.spam.headerScore >= r.spam.rejectScore) problems.push("mailinfra:relay.spam.headerScore: must be below relay.spam.rejectScore");
    for (const [key, list] of [["ldap", r.ldap?.domains ?? []], ["otrs", r.otrs?.domains ?? []]] as const)
        for (const d of list.filter((d) => !cfg.mail.localDomains.includes(d)))
            problems.push(`mailinfra:relay.${key}.domains: ${d} is not in mail.localDomains`);
    for (const [role, names] of byRole)
        if (names.length > 1) problems.push(`mailinfra:hosts: role "${role}" is given to ${names.join(", ")}; one host per role`);

    // A domain is handled in exactly one way.
    const lists: [keyof MailConfig, string[]][] = [
        ["localDomains", cfg.mail.localDomains],
        ["relayDomains", cfg.mail.relayDomains],
        ["rtDomains", cfg.mail.rtDomains],
    ];
    for (let i = 0; i < lists.length; i++)
        for (let j = i + 1; j < lists.length; j++)
            for (const d of lists[i][1].filter((d) => lists[j][1].includes(d)))
                problems.push(`mailinfra:mail.${lists[j][0]}: ${d} is also in mail.${lists[i][0]}; a domain is either local, relayed or RT`);
    for (const d of cfg.mail.legacyMailmanDomains.filter((d) => !cfg.mail.localDomains.includes(d)))
        problems.push(`mailinfra:mail.legacyMailmanDomains: ${d} must also be in mail.localDomains`);
    for (const d of Object.keys(cfg.mail.aliases).filter((d) => !cfg.mail.localDomains.includes(d)))
        problems.push(`mailinfra:mail.aliases.${d}: not a local domain (add it to mail.localDomains)`);
    for (const q of cfg.tickets.otrs.queueAddresses)
        if (!(r.otrs?.domains ?? []).includes(q.address.split("@")[1].toLowerCase()))
            problems.push(`mailinfra:tickets.otrs.queueAddresses: ${q.address} is not in a domain of relay.otrs.domains`);
    const listNames = cfg.lists.lists.map((l) => l.name);
    for (const n of listNames.filter((n, i) => listNames.indexOf(n) !== i)) problems.push(`mailinfra:lists.lists: list ${n} is given twice`);
    if (cfg.lists.lists.length && !listsDomainOf(cfg)) problems.push("mailinfra:lists.domain: lists are configured but there is no lists domain (set lists.domain or relay.listsDomain)");
    if (cfg.lists.domain && r.listsDomain && cfg.lists.domain !== r.listsDomain)
        problems.push(`mailinfra:lists.domain: ${cfg.lists.domain} differs from relay.listsDomain ${r.listsDomain} (the relay rewrites legacy list addresses there)`);
    if (cfg.lists.lists.length && !byRole.has("lists")) problems.push('mailinfra:lists.lists: no host has role "lists"');
    if (cfg.backup) {
        const target = cfg.hosts[cfg.backup.targetHost];
        if (!target) problems.push(`mailinfra:backup.targetHost: ${cfg.backup.targetHost} is not a host of mailinfra:hosts`);
        else if (target.role === "imap") problems.push(`mailinfra:backup.targetHost: ${cfg.backup.targetHost} is the IMAP store itself; backups go to another host`);
    }
    problems.push(...customRulesProblems(r.spam.customRules));
    for (const a of Object.keys(cfg.mail.submission.accountLimits))
        if (!cfg.mail.localDomains.includes(a.split("@")[1].toLowerCase())) problems.push(`mailinfra:mail.submission.accountLimits: ${a} is not in a local domain`);
    if (cfg.smoke.enabled) {
        const smokeDomain = cfg.smoke.account.split("@")[1];
        if (!cfg.mail.localDomains.includes(smokeDomain))
            problems.push(`mailinfra:smoke.account: ${cfg.smoke.account} is not in a local domain`);
    }
    return problems;
}

/** Why a CIDR is not a network address with a valid prefix (the firewall's sets take only those), or undefined. */
export function cidrProblem(cidr: string): string | undefined {
    const [address, len] = cidr.split("/");
    const bits = isIPv4(address) ? 32 : isIPv6(address) ? 128 : 0;
    if (!bits) return "is not an IPv4 or IPv6 address with a /prefix";
    const prefix = Number(len);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits) return `has a prefix outside 0-${bits}`;
    const value = bits === 32 ? address.split(".").reduce((v, o) => (v << 8n) + BigInt(o), 0n) : ipv6ToBigInt(address);
    const hostBits = (1n << BigInt(bits - prefix)) - 1n;
    if ((value & hostBits) !== 0n) return "has host bits set (write the network address, or /32 or /128 for one host)";
    return undefined;
}

function ipv6ToBigInt(address: string): bigint {
    const [head, tail] = address.includes("::") ? address.split("::") : [address, undefined];
    const groups = (s: string) => (s ? s.split(":") : []);
    const h = groups(head);
    const t = tail === undefined ? [] : groups(tail);
    const all = tail === undefined ? h : [...h, ...Array(8 - h.length - t.length).fill("0"), ...t];
    return all.reduce((v, g) => (v << 16n) + BigInt(parseInt(g, 16)), 0n);
}

/**
 * SpamAssassin directives relay.spam.customRules may use: rules, scores, descriptions and sender lists. Anything
 * else (loadplugin/tryplugin load Perl code, include reads other files, *_path options move databases) is refused.
 */
export const CUSTOM_RULE_DIRECTIVES = [
    "header", "body", "rawbody", "full", "uri", "meta", "mimeheader", "describe", "score", "tflags", "priority", "lang",
    "if", "ifplugin", "else", "endif",
    "whitelist_from", "unwhitelist_from", "whitelist_from_rcvd", "def_whitelist_from_rcvd", "whitelist_to",
    "welcomelist_from", "unwelcomelist_from", "welcomelist_from_rcvd", "def_welcomelist_from_rcvd", "welcomelist_to",
    "blacklist_from", "unblacklist_from", "blacklist_to", "blocklist_from", "unblocklist_from", "blocklist_to",
];

function customRulesProblems(text: string | undefined): string[] {
    if (text === undefined) return [];
    const key = "mailinfra:relay.spam.customRules";
    const problems: string[] = [];
    if (/[\x00-\x08\x0b-\x1f\x7f]/.test(text)) problems.push(`${key}: contains a control character (only tabs and line breaks are allowed)`);
    text.split("\n").forEach((line, i) => {
        const word = line.trim().split(/\s+/)[0];
        if (word === "" || word.startsWith("#")) return;
        if (!CUSTOM_RULE_DIRECTIVES.includes(word.toLowerCase()))
            problems.push(`${key}: line ${i + 1}: directive "${word.slice(0, 40)}" is not allowed (allowed: ${CUSTOM_RULE_DIRECTIVES.join(", ")})`);
        // Perl code inside a rule's regex
        if (/\(\?\??\{/.test(line)) problems.push(`${key}: line ${i + 1}: "(?{" / "(??{" (code in a regular expression) is not allowed`);
    });
    return problems;
}

/** Whether a lists host runs Mailman's web UI (and so needs the secret mailinfra:mailmanWebSecret). */
export function listsWebEnabled(cfg: StackConfig): boolean {
    return cfg.lists.web.enabled && hostsWithRole(cfg, "lists").length > 0;
}

/** The lists domain: lists.domain, else the relay's legacy-rewrite target relay.listsDomain. */
export function listsDomainOf(cfg: StackConfig): string | undefined {
    return cfg.lists.domain ?? cfg.relay.listsDomain;
}

export function hostsWithRole(cfg: StackConfig, role: Role): [string, HostConfig][] {
    return Object.entries(cfg.hosts).filter(([, h]) => h.role === role);
}

export function fqdnOf(cfg: StackConfig, name: string): string {
    return cfg.hosts[name].fqdn ?? `${name}.${cfg.mail.hostDomain}`;
}
