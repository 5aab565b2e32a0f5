// The whole mail fleet of one stack: validated config → one MailHost per host.
import * as pulumi from "@pulumi/pulumi";
import { ConfigError, parseStackConfig, StackConfig } from "../lib/config";
import { planFleet } from "../lib/roles";
import { MailHost } from "./mailHost";
import { SecretName } from "../lib/plan";

const CONFIG_OBJECTS = ["ssh", "hosts", "mail", "relay", "smoke"];
const CONFIG_SECRETS = ["sshPrivateKey", "smokePassword", "ldapPassword", "otrsDbPassword", "userdbSyncKey"];

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
        return parseStackConfig(raw);
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
    };
    const sshPrivateKey = config.getSecret("sshPrivateKey");
    const hosts: Record<string, MailHost> = {};
    // the relays first: the store's account-DB push needs them converged
    const order = planFleet(cfg).sort((a, b) => Number(b.role === "relay") - Number(a.role === "relay"));
    for (const plan of order) {
        const h = cfg.hosts[plan.host];
        const relays = Object.values(hosts).filter((x) => x.role === "relay");
        hosts[plan.host] = new MailHost(plan.host, {
            plan,
            connection: pulumi.secret({
                host: h.address,
                port: cfg.ssh.port,
                user: cfg.ssh.user,
                privateKeyPath: cfg.ssh.privateKeyPath,
                privateKey: sshPrivateKey,
            }),
            secrets,
            peers: relays.flatMap((r) => r.ready),
        });
    }
    return hosts;
}
