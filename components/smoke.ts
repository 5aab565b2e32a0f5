// Smoke verification inside every `pulumi up`: once all hosts have converged, one tagged message
// goes through the relay and is read back over IMAPS. Not a resource on purpose: a resource that
// re-runs on every apply would show as a change in every preview, and a second up must report 0.
import * as pulumi from "@pulumi/pulumi";
import { StackConfig } from "../lib/config";
import { smokeTest } from "../lib/smoke";
import { MailHost } from "./mailHost";

/** Where did the message stop? Its Exim log lines and the queue size on the relay and the store. */
async function whereItStopped(token: string, targets: { name: string; address: string }[], cfg: StackConfig, privateKey?: string): Promise<string> {
    const { NodeSSH } = await import("node-ssh");
    const fs = await import("fs");
    const key = privateKey ?? (cfg.ssh.privateKeyPath ? fs.readFileSync(cfg.ssh.privateKeyPath, "utf8") : undefined);
    const lines: string[] = [];
    for (const t of targets) {
        const ssh = new NodeSSH();
        try {
            await ssh.connect({ host: t.address, port: cfg.ssh.port, username: cfg.ssh.user, privateKey: key, agent: key ? undefined : process.env.SSH_AUTH_SOCK, readyTimeout: 10000 });
            const ids = (await ssh.execCommand(`grep -h '${token}' /var/log/exim4/mainlog | awk '{print $3}' | sort -u | head -n 5`)).stdout.split("\n").filter(Boolean);
            const log = ids.length ? (await ssh.execCommand(`grep -hE '${ids.join("|")}' /var/log/exim4/mainlog | tail -n 8`)).stdout : "(no log line mentions the message)";
            const queue = (await ssh.execCommand("exim4 -bpc")).stdout.trim();
            lines.push(`${t.name} (${t.address}): queue ${queue} message(s)\n    ${log.split("\n").join("\n    ")}`);
        } catch (e) {
            lines.push(`${t.name} (${t.address}): not reachable over SSH (${(e as Error).message})`);
        } finally {
            ssh.dispose();
        }
    }
    return lines.join("\n");
}

export function verifyAfterApply(cfg: StackConfig, hosts: Record<string, MailHost>, password: pulumi.Output<string>, sshPrivateKey?: pulumi.Output<string>): void {
    if (!cfg.smoke.enabled || pulumi.runtime.isDryRun()) return;
    const relay = Object.values(cfg.hosts).find((h) => h.role === "relay")!;
    const store = Object.values(cfg.hosts).find((h) => h.role === "imap")!;
    const converged = Object.values(hosts).flatMap((h) => h.ready.map((r) => (r as pulumi.CustomResource).id ?? (r as pulumi.ComponentResource).urn));
    pulumi.all([password, sshPrivateKey, ...converged]).apply(async ([pw, key]) => {
        const r = await smokeTest({ relayAddress: relay.address, storeAddress: store.address, account: cfg.smoke.account, password: pw as string, timeoutMs: cfg.smoke.timeoutSeconds * 1000 });
        if (!r.ok) {
            const targets = Object.entries(cfg.hosts).filter(([, h]) => h.role === "relay" || h.role === "imap").map(([name, h]) => ({ name, address: h.address }));
            const msg = `smoke test failed: ${r.error}\nwhere the message stopped:\n${await whereItStopped(r.token, targets, cfg, key as string | undefined)}`;
            pulumi.log.error(msg);
            // the diagnostic alone does not fail the update
            throw new pulumi.RunError("mail does not flow: see the smoke test error above");
        }
        pulumi.log.info(`smoke test passed: ${r.token} delivered relay ${relay.address} -> store ${store.address} in ${r.foundAfterMs} ms`);
    });
}
