// Shared plan parts: every host's base, and Exim with a complete hand-written exim4.conf.
import { fqdnOf, hostsWithRole, Role, StackConfig } from "../config";
import { eximList, HostPlan, render } from "../plan";

export const SNAKEOIL = { certificate: "/etc/ssl/certs/ssl-cert-snakeoil.pem", privateKey: "/etc/ssl/private/ssl-cert-snakeoil.key" };

export const EXIM_VALIDATE = `exim4 -bV -C "$NEW" >/dev/null`;

export function roleHost(cfg: StackConfig, role: Role): string | undefined {
    const found = hostsWithRole(cfg, role)[0];
    return found ? fqdnOf(cfg, found[0]) : undefined;
}

export function templateData(cfg: StackConfig, host: string) {
    return {
        fqdn: fqdnOf(cfg, host),
        role: cfg.hosts[host].role,
        ownNetworksList: eximList(cfg.mail.ownNetworks),
        list: eximList,
        tls: SNAKEOIL,
        localDomains: cfg.mail.localDomains,
        relayDomains: cfg.mail.relayDomains,
        rtDomains: cfg.mail.rtDomains,
        postmaster: cfg.mail.postmaster,
        relayHost: roleHost(cfg, "relay"),
        imapHost: roleHost(cfg, "imap"),
        rtHost: roleHost(cfg, "rt"),
    };
}

/** Every host: identity files and the packages every role needs. */
export function basePart(cfg: StackConfig, host: string): Partial<HostPlan> {
    const fqdn = fqdnOf(cfg, host);
    return {
        packages: ["ca-certificates", "ssl-cert", "cron"],
        files: [{ path: "/etc/mailname", content: `${fqdn}\n`, mode: "0644", owner: "root", group: "root", keepOnDelete: true }],
    };
}

/** Exim with a complete, hand-written /etc/exim4/exim4.conf (Debian's generated config is bypassed). */
export function eximPart(template: string, data: Record<string, unknown>): Partial<HostPlan> {
    return {
        packages: ["exim4-daemon-heavy"],
        // Debian-exim reads the TLS key through the ssl-cert group
        groupMemberships: [{ user: "Debian-exim", group: "ssl-cert" }],
        files: [
            {
                path: "/etc/exim4/exim4.conf",
                content: render(template, data),
                mode: "0644",
                owner: "root",
                group: "root",
                validate: EXIM_VALIDATE,
                notify: ["exim4"],
            },
        ],
        // restart, not reload: a new daemon also picks up new group memberships (ssl-cert, vmail)
        services: [{ name: "exim4", onChange: "restart" }],
    };
}

