// Host-to-host SSH (account push and Bayes training to the relays, backups and restore to the backup host) trusts
// exactly the stack's pins: a known_hosts rendered from hosts.*.sshHostKeys, used with StrictHostKeyChecking=yes.
// A rebuilt peer, once re-pinned, is trusted again after the next `pulumi up` rewrites this file.
import { fqdnOf, StackConfig } from "../config";
import { renderKnownHosts } from "../hostKeys";
import { HostPlan } from "../plan";

export const FLEET_KNOWN_HOSTS = "/root/.ssh/mailinfra-known_hosts";

/** The known_hosts of every other host of the stack (by FQDN and address). */
export function knownHostsPart(cfg: StackConfig, host: string): Partial<HostPlan> {
    const peers = Object.entries(cfg.hosts).filter(([name]) => name !== host);
    const content =
        "# Rendered by mailinfra from the stack's pinned host keys (mailinfra:hosts.<name>.sshHostKeys); re-pin with npm run pin-host\n" +
        renderKnownHosts(peers.map(([name, h]) => ({ names: [fqdnOf(cfg, name), h.address], keys: h.sshHostKeys ?? [] })));
    return {
        packages: ["openssh-client"],
        files: [{ path: FLEET_KNOWN_HOSTS, content, mode: "0644", owner: "root", group: "root", validate: `ssh-keygen -l -f "$NEW" >/dev/null` }],
    };
}
