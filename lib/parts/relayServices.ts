// Services the MX hosts run next to Exim: spamd (SpamAssassin 4) and a local caching resolver.
import { StackConfig } from "../config";
import { HostPlan, render } from "../plan";

/** The MX hosts' shared inbound filtering: the system filter (strips untrusted X-Spam-* headers, adds ours)
 *  and the tmpfs Exim's content scanning writes its temporary mbox files to (seed: tmpfs for speed). */
export function inboundFilterPart(): Partial<HostPlan> {
    return {
        mounts: [{ path: "/var/spool/exim4/scan", owner: "Debian-exim", group: "Debian-exim", mode: "0750", size: "256m" }],
        files: [
            {
                path: "/etc/exim4/system_filter",
                content: render("relay/etc/exim4/system_filter.ejs", {}),
                mode: "0644",
                owner: "root",
                group: "root",
                validate: `printf 'Subject: filter check\\n\\nbody\\n' | exim4 -bF "$NEW" >/dev/null`,
            },
        ],
    };
}

/** Spam thresholds as Exim's $spam_score_int (score × 10). */
export function spamPolicyData(cfg: StackConfig) {
    const s = cfg.relay.spam;
    return { maxScanSizeKb: s.maxScanSizeKb, headerScoreInt: Math.round(s.headerScore * 10), rejectScoreInt: Math.round(s.rejectScore * 10) };
}

/** SpamAssassin's local.cf is linted together with the rest of /etc/spamassassin before it goes live. */
const SA_LINT = `d=$(mktemp -d); trap 'rm -rf "$d"' EXIT; cp -a /etc/spamassassin/. "$d"/; cp "$NEW" "$d/local.cf"; spamassassin --lint --siteconfigpath="$d"`;

export function spamassassinPart(cfg: StackConfig): Partial<HostPlan> {
    const data = { ownNetworks: cfg.mail.ownNetworks, children: cfg.relay.spam.spamdChildren, customRules: cfg.relay.spam.customRules ?? "" };
    return {
        packages: ["spamassassin", "spamd"],
        // Bayes DB where spamd (ProtectSystem=full on bookworm) can write
        directories: [{ path: "/var/lib/spamassassin/bayes", mode: "0750", owner: "debian-spamd", group: "debian-spamd" }],
        files: [
            {
                path: "/etc/spamassassin/local.cf",
                content: render("relay/etc/spamassassin/local.cf.ejs", data),
                mode: "0644",
                owner: "root",
                group: "root",
                validate: SA_LINT,
                notify: ["spamd"],
            },
            {
                path: "/etc/default/spamd",
                content: render("relay/etc/default/spamd.ejs", data),
                mode: "0644",
                owner: "root",
                group: "root",
                notify: ["spamd"],
            },
            {
                // NICE= in the defaults file is ignored under systemd. spamd runs inside Exim's DATA ACL: the
                // sender waits for it, so a lower priority (the seed's Nice=10) only delays every message when the
                // host is busy (docs/bench.md)
                path: "/etc/systemd/system/spamd.service.d/mailinfra.conf",
                content: "# rendered by mailinfra\n# spamd answers inside Exim's DATA ACL while the sender waits: normal priority, not the seed's Nice=10\n[Service]\nNice=0\n",
                mode: "0644",
                owner: "root",
                group: "root",
                notify: ["spamd"],
            },
        ],
        services: [
            { name: "spamd", onChange: "restart" },
            // rule updates and compilation: Debian's daily timer (the seed's SARE channel is gone)
            { name: "spamassassin-maintenance.timer", onChange: "restart" },
        ],
    };
}

export function resolverPart(cfg: StackConfig): Partial<HostPlan> {
    const forwarders = cfg.relay.resolverForwarders;
    return {
        packages: ["unbound"],
        files: [
            {
                path: "/etc/unbound/unbound.conf.d/mailinfra.conf",
                content: render("relay/etc/unbound/unbound.conf.d/mailinfra.conf.ejs", { forwarders, reservedZones: cfg.relay.resolverReservedZonesInUse }),
                mode: "0644",
                owner: "root",
                group: "root",
                validate: `unbound-checkconf "$NEW"`,
                notify: ["unbound"],
            },
            {
                path: "/etc/resolv.conf",
                content: "# rendered by mailinfra: the relay's own caching resolver\nnameserver 127.0.0.1\noptions edns0 trust-ad\n",
                mode: "0644",
                owner: "root",
                group: "root",
                requires: ["/etc/unbound/unbound.conf.d/mailinfra.conf"],
                keepOnDelete: true,
            },
        ],
        services: [{ name: "unbound", onChange: "restart" }],
    };
}
