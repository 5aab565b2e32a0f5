// The whole mail fleet of one stack: validated config → one MailHost per host.
import * as pulumi from "@pulumi/pulumi";
import { ConfigError, parseStackConfig, StackConfig } from "../lib/config";
import { planFleet } from "../lib/roles";
import { MailHost } from "./mailHost";

/** Reads every mailinfra:* key; any problem stops the program before a resource is registered. */
export function readStackConfig(config = new pulumi.Config("mailinfra")): StackConfig {
    const raw: Record<string, unknown> = {};
    for (const key of ["ssh", "hosts", "mail", "smoke"]) {
        const v = config.getObject<unknown>(key);
        if (v !== undefined) raw[key] = v;
    }
    // Keys the program does not know are errors too (typos must not be silently ignored).
    const known = new Set(["ssh", "hosts", "mail", "smoke", "sshPrivateKey", "smokePassword"]);
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
    const sshPrivateKey = config.getSecret("sshPrivateKey");
    const smokePassword = cfg.smoke.enabled ? config.requireSecret("smokePassword") : undefined;
    const hosts: Record<string, MailHost> = {};
    for (const plan of planFleet(cfg)) {
        const h = cfg.hosts[plan.host];
        hosts[plan.host] = new MailHost(plan.host, {
            plan,
            connection: pulumi.secret({
                host: h.address,
                port: cfg.ssh.port,
                user: cfg.ssh.user,
                privateKeyPath: cfg.ssh.privateKeyPath,
                privateKey: sshPrivateKey,
            }),
            secrets: { smokePassword },
        });
    }
    return hosts;
}
