// The whole mail fleet of one stack: validated config → one MailHost per host.
import * as pulumi from "@pulumi/pulumi";
import { CONFIG_OBJECTS, ConfigError, hostsWithRole, listsWebEnabled, parseStackConfig, StackConfig } from "../lib/config";
import { planFleet } from "../lib/roles";
import { planDnsRecords } from "../lib/dns";
import { sha256 } from "../lib/hash";
import { filesInPlaceProbe } from "../lib/hostScripts";
import { deployDns } from "./dns";
import { MailHost } from "./mailHost";
import { verifyAfterApply } from "./smoke";
import { RemoteFile, Script } from "./remote";
import { SECRET_NAMES, SecretName } from "../lib/plan";

/** Secret keys: those rendered into host files, plus the SSH key and the Cloudflare token the program itself uses. */
const CONFIG_SECRETS = [...SECRET_NAMES, "sshPrivateKey", "cloudflareApiToken"];

/** Reads every mailinfra:* key; any problem stops the program before a resource is registered. */
export function readStackConfig(config = new pulumi.Config("mailinfra")): StackConfig {
    const raw: Record<string, unknown> = {};
    for (const key of CONFIG_OBJECTS) {
        const v = config.getObject<unknown>(key);
        if (v !== undefined) raw[key] = v;
    }
    // Keys the program does not know are errors too (typos must not be silently ignored).
    const known = new Set<string>([...CONFIG_OBJECTS, ...CONFIG_SECRETS]);
    const all = Object.keys(pulumi.runtime.allConfig()).filter((k) => k.startsWith("mailinfra:")).map((k) => k.slice("mailinfra:".length));
    const unknown = all.filter((k) => !known.has(k));
    try {
        if (unknown.length) throw new ConfigError(unknown.map((k) => `mailinfra:${k}: unknown key`));
        return parseStackConfig(raw, { stack: pulumi.getStack() });
    } catch (e) {
        if (e instanceof ConfigError) throw new pulumi.RunError(e.message);
        throw e;
    }
}

export function deployFleet(cfg: StackConfig, config = new pulumi.Config("mailinfra")) {
    const secrets: Partial<Record<SecretName, pulumi.Output<string>>> = {
        smokePassword: cfg.smoke.enabled ? config.requireSecret("smokePassword") : undefined,
        ldapPassword: cfg.relay.ldap ? config.requireSecret("ldapPassword") : undefined,
        otrsDbPassword: cfg.relay.otrs ? config.requireSecret("otrsDbPassword") : undefined,
        userdbSyncKey: config.requireSecret("userdbSyncKey"),
        tlsPrivateKey: cfg.tls.certificate ? config.requireSecret("tlsPrivateKey") : undefined,
        bayesLearnKey: cfg.mail.bayesLearnPublicKey ? config.requireSecret("bayesLearnKey") : undefined,
        backupKey: cfg.backup ? config.requireSecret("backupKey") : undefined,
        mailmanWebSecret: listsWebEnabled(cfg) ? config.requireSecret("mailmanWebSecret") : undefined,
    };
    const sshPrivateKey = config.getSecret("sshPrivateKey");
    const hosts: Record<string, MailHost> = {};
    // the relays first (the store's account-DB push needs them), then the backup host (a rebuilt store
    // restores from it before its first push)
    const rank = (p: { host: string; role: string }) => (p.role === "relay" ? 0 : p.host === cfg.backup?.targetHost ? 1 : 2);
    const order = planFleet(cfg).sort((a, b) => rank(a) - rank(b));
    const connectionOf = (name: string) =>
        pulumi.secret({
            host: cfg.hosts[name].address,
            port: cfg.ssh.port,
            user: cfg.ssh.user,
            privateKeyPath: cfg.ssh.privateKeyPath,
            privateKey: sshPrivateKey,
            // a pin change is no host change (provider hostIdentity): re-pinning replaces nothing
            hostKeys: cfg.hosts[name].sshHostKeys,
            name,
            stack: pulumi.getStack(),
        });
    for (const plan of order) {
        const relays = Object.values(hosts).filter((x) => x.role === "relay");
        const backupHost = plan.role === "imap" && cfg.backup ? hosts[cfg.backup.targetHost] : undefined;
        const peers = [...new Set([...relays, ...(backupHost ? [backupHost] : [])])];
        hosts[plan.host] = new MailHost(plan.host, {
            plan,
            connection: connectionOf(plan.host),
            secrets,
            peers: peers.flatMap((r) => r.ready),
            peerInstallIds: peers.map((r) => r.installId),
        });
    }
    // When the store moves (cold failover), the relays hold retry records the new store collected while it
    // was still converging; mail queued for it would wait for the next queue run. Runs when the store's
    // address changes or it was re-imaged (and on the first converge), never on a no-op.
    const stores = hostsWithRole(cfg, "imap");
    const flushes = hostsWithRole(cfg, "relay").map(
        ([relay]) =>
            new Script(
                `${relay}:deliver-to-new-store`,
                {
                    connection: connectionOf(relay),
                    create: ["sleep 1", "exim_tidydb -t 1s /var/spool/exim4 retry >/dev/null 2>&1 || true  # fails only without a retry DB: nothing to clear", "setsid -f exim4 -qff </dev/null >/dev/null 2>&1"].join("\n"),
                    triggers: stores.flatMap(([name, h]) => [`${name} ${h.address}`, hosts[name].installId]),
                },
                { dependsOn: stores.flatMap(([name]) => hosts[name].ready) },
            ),
    );
    if (secrets.smokePassword) verifyAfterApply(cfg, hosts, secrets.smokePassword, sshPrivateKey, flushes);
    return hosts;
}

/** The lab DNS (unbound on the lab bridge) reads every *.conf of this directory. */
const LAB_RUN = process.env.LAB_RUN ?? "/var/tmp/mailinfra-lab";
export const LAB_DNS_FILE = `${LAB_RUN}/dns/50-program.conf`;
/** Installed by scripts/lab-fixtures.sh; a fixed path keeps the program independent of the checkout's location. */
export const LAB_DNS_RELOAD = `${LAB_RUN}/dns-reload`;

/** Publishes the records computed from stack config through the configured backend. */
export function publishDns(cfg: StackConfig, config = new pulumi.Config("mailinfra")) {
    if (cfg.dns.backend === "none") return undefined;
    const records = planDnsRecords(cfg, {
        listsDomain: cfg.relay.listsDomain,
        dmarcPolicy: cfg.dns.dmarcPolicy,
        spfExtra: cfg.relay.wikiInterface ? [`ip4:${cfg.relay.wikiInterface}`] : [],
    });
    if (cfg.dns.backend === "cloudflare")
        return deployDns(records, { kind: "cloudflare", zoneIds: cfg.dns.zoneIds, apiToken: config.requireSecret("cloudflareApiToken") });
    const lab = deployDns(records, { kind: "lab" });
    const local = { host: "local" };
    const file = new RemoteFile("lab-dns:records", { connection: local, path: LAB_DNS_FILE, content: lab.unbound, mode: "0644", owner: "root", group: "root" });
    new Script(
        "lab-dns:reload",
        // refresh re-runs the reload when the records file was not as declared (it is then re-created first)
        { connection: local, create: LAB_DNS_RELOAD, triggers: [sha256(lab.unbound)], probe: filesInPlaceProbe([`${LAB_DNS_FILE}=${sha256(lab.unbound)}`]) },
        { dependsOn: [file] },
    );
    return lab;
}
