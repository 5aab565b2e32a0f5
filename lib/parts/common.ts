// Shared plan parts: every host's base, and Exim with a complete hand-written exim4.conf.
import { fqdnOf, hostsWithRole, Role, StackConfig } from "../config";
import { eximList, HostPlan, render } from "../plan";

export const SNAKEOIL = { certificate: "/etc/ssl/certs/ssl-cert-snakeoil.pem", privateKey: "/etc/ssl/private/ssl-cert-snakeoil.key" };
export const MANAGED_TLS = { certificate: "/etc/ssl/certs/mailinfra.pem", privateKey: "/etc/ssl/private/mailinfra.key" };

export function tlsPaths(cfg: StackConfig) {
    return cfg.tls.certificate ? MANAGED_TLS : SNAKEOIL;
}

/**
 * Mozilla's "intermediate" server profile on every TLS port: TLS 1.2 with ECDHE + AEAD (AES-GCM,
 * CHACHA20-POLY1305) only, and TLS 1.3; no DHE, so no DH parameters to manage. The same suites spelled
 * for OpenSSL (Dovecot, nginx, Apache) and for GnuTLS (Debian's Exim); the client picks (no server order).
 */
export const TLS_PROFILE = {
    openssl: {
        protocols: ["TLSv1.2", "TLSv1.3"],
        ciphers12: [
            "ECDHE-ECDSA-AES128-GCM-SHA256",
            "ECDHE-RSA-AES128-GCM-SHA256",
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "ECDHE-RSA-AES256-GCM-SHA384",
            "ECDHE-ECDSA-CHACHA20-POLY1305",
            "ECDHE-RSA-CHACHA20-POLY1305",
        ].join(":"),
        curves: "X25519:prime256v1:secp384r1",
    },
    gnutls: [
        "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
        "-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305",
        "-MAC-ALL:+AEAD",
        "-KX-ALL:+ECDHE-ECDSA:+ECDHE-RSA",
        "-GROUP-ALL:+GROUP-X25519:+GROUP-SECP256R1:+GROUP-SECP384R1",
        "-SIGN-RSA-SHA1:-SIGN-ECDSA-SHA1",
    ].join(":"),
} as const;

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
        tls: tlsPaths(cfg),
        tlsProfile: TLS_PROFILE,
        localDomains: cfg.mail.localDomains,
        relayDomains: cfg.mail.relayDomains,
        rtDomains: cfg.mail.rtDomains,
        postmaster: cfg.mail.postmaster,
        relayHost: roleHost(cfg, "relay"),
        imapHost: roleHost(cfg, "imap"),
        rtHost: roleHost(cfg, "rt"),
    };
}

/** Daemons that read the certificate and key (each reloaded only where the host runs it). */
const TLS_READERS = ["exim4", "dovecot", "nginx", "apache2"];

/** Every host: identity files, the packages every role needs, and the managed TLS certificate. */
export function basePart(cfg: StackConfig, host: string): Partial<HostPlan> {
    const fqdn = fqdnOf(cfg, host);
    const tls = cfg.tls.certificate
        ? [
              { path: MANAGED_TLS.certificate, content: cfg.tls.certificate.trim() + "\n", mode: "0644", owner: "root", group: "root", validate: `openssl x509 -noout -in "$NEW"`, notify: TLS_READERS },
              {
                  // readable by the ssl-cert group (Debian-exim is in it); checked against the certificate
                  path: MANAGED_TLS.privateKey,
                  content: "(rendered from secrets)",
                  secret: true,
                  fromSecrets: { names: ["tlsPrivateKey" as const], render: (s: Record<string, string>) => s.tlsPrivateKey.trim() + "\n" },
                  mode: "0640",
                  owner: "root",
                  group: "ssl-cert",
                  validate: `[ "$(openssl pkey -in "$NEW" -pubout 2>/dev/null)" = "$(openssl x509 -in ${MANAGED_TLS.certificate} -noout -pubkey)" ] || { echo "the TLS private key does not match ${MANAGED_TLS.certificate}"; exit 1; }`,
                  requires: [MANAGED_TLS.certificate],
                  notify: TLS_READERS,
              },
          ]
        : [];
    return {
        packages: ["ca-certificates", "ssl-cert", "cron", "openssl"],
        files: [{ path: "/etc/mailname", content: `${fqdn}\n`, mode: "0644", owner: "root", group: "root", keepOnDelete: true }, ...tls],
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

