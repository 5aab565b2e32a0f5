// The lists host / secondary MX (seed: lily): Exim with the relay's inbound policy (shared ACL and spam
// parts, spamd), relaying for the fleet's domains with recipient callouts to the primary, and Mailman 3
// core (Debian) behind it over LMTP, with lists created from stack config.
import { hostsWithRole, listsDomainOf, StackConfig } from "../config";
import { emptyPlan, FileSpec, HostPlan, mergePlans, render } from "../plan";
import { basePart, eximPart, templateData } from "../parts/common";
import { inboundFilterPart, spamassassinPart, spamPolicyData } from "../parts/relayServices";

/** Mailman's prototype archiver: one Maildir per list, $MAILMAN_ARCHIVE_DIR/<list address>/new/<message>. */
export const MAILMAN_LMTP_PORT = 8024;

export const MAILMAN_ARCHIVE_DIR = "/var/lib/mailman3/archives/prototype";

/** The domains this host is backup MX for whatever DNS says: everything the relay is primary for. */
export function secondaryRelayDomains(cfg: StackConfig): string[] {
    const m = cfg.mail;
    return [...new Set([...m.localDomains, ...m.rtDomains, ...m.relayDomains])].sort();
}

export function listsTemplateData(cfg: StackConfig, host: string) {
    const relays = hostsWithRole(cfg, "relay").map(([, h]) => h.address);
    return {
        ...templateData(cfg, host),
        wiki: undefined,
        listsDomain: listsDomainOf(cfg),
        primaryMx: cfg.lists.primaryMx.length ? cfg.lists.primaryMx : relays,
        spam: spamPolicyData(cfg),
    };
}

/** Debian's /etc/default/exim4 with queue runs every 5 min: mail queued for the primary or Mailman goes out soon. */
function eximDefaultsFile(): FileSpec {
    return {
        path: "/etc/default/exim4",
        content: [
            "# rendered by mailinfra (Debian's defaults, queue runner every 5 minutes)",
            "EX4DEF_VERSION=''",
            "QUEUERUNNER='combined'",
            "QUEUEINTERVAL='5m'",
            "COMMONOPTIONS=''",
            "QUEUERUNNEROPTIONS=''",
            "QFLAGS=''",
            "SMTPLISTENEROPTIONS=''",
            "",
        ].join("\n"),
        mode: "0644",
        owner: "root",
        group: "root",
        validate: `sh -n "$NEW"`,
        notify: ["exim4"],
    };
}

function relayDomainsFile(cfg: StackConfig): FileSpec {
    return {
        path: "/etc/exim4/relay_domains",
        content: `# Domains this host relays for as secondary MX, whatever their MX records say (rendered by mailinfra)\n${secondaryRelayDomains(cfg).join("\n")}\n`,
        mode: "0644",
        owner: "root",
        group: "root",
    };
}

/** The list's old addresses on legacy Mailman domains (relay.legacyMailingLists × mail.legacyMailmanDomains). */
export function legacyAliases(cfg: StackConfig, name: string): string[] {
    return cfg.relay.legacyMailingLists.includes(name) ? cfg.mail.legacyMailmanDomains.map((d) => `${name}@${d}`) : [];
}

/** Idempotent: creates missing lists, then makes each list's membership exactly the configured one. */
export function listsStepScript(cfg: StackConfig): string {
    const domain = listsDomainOf(cfg);
    const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
    const lines = [
        "set -euo pipefail",
        // the CLI refuses root; as the package's user it writes files Mailman can read
        "mm() { runuser -u list -- mailman \"$@\"; }",
        // Python on stdin in a list's context; the console prints errors but always exits 0
        'mm_python() { local out; out=$(mm shell -l "$1" 2>&1); if grep -q Traceback <<<"$out"; then echo "$out" >&2; return 1; fi; }',
        // one list address a line, space-padded
        "existing=$(mm lists -q | sed 's/[[:space:]]*$//')",
    ];
    for (const l of cfg.lists.lists) {
        const addr = `${l.name}@${domain}`;
        lines.push(
            `grep -qixF ${q(addr)} <<<"$existing" || mm create --owner ${q(l.owner)} ${q(addr)}`,
            `printf '%s\\n' ${l.members.map(q).join(" ")} | mm syncmembers --no-welcome-msg --no-goodbye-msg --no-admin-notify - ${q(addr)}`,
            // legacy addresses the relay rewrites here stay in To:/Cc:; without them as acceptable aliases
            // Mailman's implicit-destination rule holds every such post for moderation
            `printf '%s\\n' ${[
                "from mailman.interfaces.mailinglist import IAcceptableAliasSet",
                "a = IAcceptableAliasSet(m)",
                "a.clear()",
                ...legacyAliases(cfg, l.name).map((a) => `a.add("${a}")`),
                "commit()",
            ]
                .map(q)
                .join(" ")} | mm_python ${q(addr)}`,
        );
    }
    return lines.join("\n") + "\n";
}

function mailmanPart(cfg: StackConfig, host: string): Partial<HostPlan> {
    const data = { ...templateData(cfg, host), siteOwner: cfg.mail.postmaster };
    return {
        packages: ["mailman3"],
        files: [
            {
                path: "/etc/mailman3/mailman.cfg",
                content: render("lists/etc/mailman3/mailman.cfg.ejs", data),
                mode: "0640",
                owner: "root",
                group: "list",
                validate: `runuser -u list -- mailman -C "$NEW" info >/dev/null`,
                notify: ["mailman3"],
            },
            {
                // "started" = LMTP answers: Exim's first delivery after a (re)start must not hit a closed port and
                // mark 127.0.0.1 as down until the next retry time
                path: "/etc/systemd/system/mailman3.service.d/mailinfra.conf",
                content: [
                    "# rendered by mailinfra",
                    "[Service]",
                    `ExecStartPost=/bin/bash -c 'for i in $$(seq 1 120); do (exec 3<>/dev/tcp/127.0.0.1/${MAILMAN_LMTP_PORT}) 2>/dev/null && exit 0; sleep 1; done; echo "Mailman LMTP not listening on 127.0.0.1:${MAILMAN_LMTP_PORT} after 120 s" >&2; exit 1'`,
                    "TimeoutStartSec=180",
                    "",
                ].join("\n"),
                mode: "0644",
                owner: "root",
                group: "root",
                notify: ["mailman3"],
            },
        ],
        steps: cfg.lists.lists.length ? [{ name: "mailman-lists", script: listsStepScript(cfg), after: ["files"] }] : [],
        services: [{ name: "mailman3", onChange: "restart" }],
    };
}

export function planLists(cfg: StackConfig, host: string): HostPlan {
    const exim = eximPart("lists/etc/exim4/exim4.conf.ejs", listsTemplateData(cfg, host));
    const relayDomains = relayDomainsFile(cfg);
    // Exim reads both at run time (exim -bV checks neither): in place before the config that names them
    exim.files![0].requires = [relayDomains.path, "/etc/exim4/system_filter"];
    return mergePlans(
        emptyPlan(host, "lists"),
        basePart(cfg, host),
        { files: [relayDomains, eximDefaultsFile()] },
        inboundFilterPart(),
        exim,
        spamassassinPart(cfg),
        mailmanPart(cfg, host),
    );
}
