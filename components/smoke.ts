// Smoke verification inside every `pulumi up`: once all hosts have converged, one tagged message
// goes through the relay and is read back over IMAPS. Not a resource on purpose: a resource that
// re-runs on every apply would show as a change in every preview, and a second up must report 0.
import * as pulumi from "@pulumi/pulumi";
import { hostsWithRole, StackConfig } from "../lib/config";
import { smokeTest } from "../lib/smoke";
import { closeAllSessions, sessionFor } from "../provider/ssh";
import { MailHost } from "./mailHost";

/** Where did the message stop? Its Exim log lines and the queue size on the relay and the store. */
async function whereItStopped(token: string, cfg: StackConfig, privateKey?: string): Promise<string> {
    const report = [
        `ids=$(grep -h '${token}' /var/log/exim4/mainlog | awk '{print $3}' | sort -u | head -n 5 | paste -sd'|')`,
        `echo "queue $(exim4 -bpc) message(s)"`,
        `if [ -n "$ids" ]; then grep -hE "$ids" /var/log/exim4/mainlog | tail -n 8; else echo "(no log line mentions the message)"; fi`,
    ].join("\n");
    const lines: string[] = [];
    for (const [name, h] of [...hostsWithRole(cfg, "relay"), ...hostsWithRole(cfg, "imap")]) {
        const conn = { host: h.address, port: cfg.ssh.port, user: cfg.ssh.user, privateKeyPath: cfg.ssh.privateKeyPath, privateKey, hostKeys: h.sshHostKeys, name, stack: pulumi.getStack() };
        try {
            const [queue, ...log] = (await sessionFor(conn).run(report)).stdout.trim().split("\n");
            lines.push(`${name} (${h.address}): ${queue}\n    ${log.join("\n    ")}`);
        } catch (e) {
            lines.push(`${name} (${h.address}): not reachable over SSH (${(e as Error).message})`);
        }
    }
    closeAllSessions();
    return lines.join("\n");
}

export function verifyAfterApply(cfg: StackConfig, hosts: Record<string, MailHost>, password: pulumi.Output<string>, sshPrivateKey?: pulumi.Output<string>, after: pulumi.CustomResource[] = []): void {
    if (!cfg.smoke.enabled || pulumi.runtime.isDryRun()) return;
    const [[, relay]] = hostsWithRole(cfg, "relay");
    const [[, store]] = hostsWithRole(cfg, "imap");
    const converged = Object.values(hosts).flatMap((h) => h.ready.map((r) => (r as pulumi.CustomResource).id ?? (r as pulumi.ComponentResource).urn));
    pulumi.all([password, sshPrivateKey, ...converged, ...after.map((r) => r.id)]).apply(async ([pw, key]) => {
        const r = await smokeTest({ relayAddress: relay.address, storeAddress: store.address, account: cfg.smoke.account, password: pw as string, timeoutMs: cfg.smoke.timeoutSeconds * 1000, certificate: cfg.tls.certificate });
        if (!r.ok) {
            const msg = `smoke test failed: ${r.error}\nwhere the message stopped:\n${await whereItStopped(r.token, cfg, key as string | undefined)}`;
            pulumi.log.error(msg);
            // the diagnostic alone does not fail the update
            throw new pulumi.RunError("mail does not flow: see the smoke test error above");
        }
        pulumi.log.info(`smoke test passed: ${r.token} delivered relay ${relay.address} -> store ${store.address} in ${r.foundAfterMs} ms; ${r.certificate}`);
    });
}
