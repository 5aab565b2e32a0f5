// Reads a stack's config (secrets decrypted by the Pulumi CLI into this process's memory only) for
// the operator commands (status, drift, probe), and SSH connections to its hosts.
import { execFileSync } from "child_process";
import * as path from "path";
import { CONFIG_OBJECTS, parseStackConfig, StackConfig } from "../lib/config";
import { Connection } from "../provider/ssh";

export interface LoadedStack {
    cfg: StackConfig;
    secret(name: string): string | undefined;
    connection(host: string): Connection;
}

export function loadStack(stack: string, repo = path.resolve(__dirname, "..")): LoadedStack {
    const json = execFileSync(path.join(repo, "scripts", "pulumi"), ["config", "--stack", stack, "--json", "--show-secrets"], { encoding: "utf8", maxBuffer: 16 << 20 });
    const raw = JSON.parse(json) as Record<string, { value: string }>;
    const get = (k: string) => raw[`mailinfra:${k}`]?.value;
    const cfg = parseStackConfig(Object.fromEntries(CONFIG_OBJECTS.filter((k) => get(k) !== undefined).map((k) => [k, JSON.parse(get(k)!)])), { stack });
    return {
        cfg,
        secret: get,
        connection: (host) => ({
            host: cfg.hosts[host].address,
            port: cfg.ssh.port,
            user: cfg.ssh.user,
            privateKeyPath: cfg.ssh.privateKeyPath,
            privateKey: get("sshPrivateKey"),
            hostKeys: cfg.hosts[host].sshHostKeys,
            name: host,
            stack,
        }),
    };
}
