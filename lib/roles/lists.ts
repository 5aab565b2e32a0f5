// The lists host / secondary MX (seed: lily): Exim with the relay's inbound policy (shared ACL and spam
// parts, spamd), relaying for the fleet's domains with recipient callouts to the primary, and Mailman 3
// core (Debian) behind it over LMTP, with lists created from stack config.
import { createHmac } from "crypto";
import { shq as q } from "../shell";
import { fqdnOf, hostsWithRole, listsDomainOf, listsWebEnabled, StackConfig } from "../config";
import { emptyPlan, FileSpec, HostPlan, mergePlans, render } from "../plan";
import { basePart, eximPart, MANAGED_TLS, templateData } from "../parts/common";
import { inboundFilterPart, spamassassinPart, spamPolicyData } from "../parts/relayServices";

/** Mailman's prototype archiver: one Maildir per list, $MAILMAN_ARCHIVE_DIR/<list address>/new/<message>. */
export const MAILMAN_LMTP_PORT = 8024;

/** Mailman core's REST API (bound to 127.0.0.1; the web UI's only way into core). */
export const MAILMAN_REST_PORT = 8001;

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

/** The web UI's three shared keys (Django SECRET_KEY, REST admin password, HyperKitty archiver key). */
export interface MailmanWebKeys {
    djangoSecretKey: string;
    restPassword: string;
    archiverKey: string;
}

/**
 * One stack secret instead of three: each key is HMAC-SHA256(mailmanWebSecret, its own label), so the keys are
 * independent of each other, stable across converges (a second `pulumi up` changes nothing) and rotated together
 * by setting a new mailmanWebSecret. All three only ever meet on this host, so one root of trust loses nothing.
 */
export function mailmanWebKeys(mailmanWebSecret: string): MailmanWebKeys {
    const derive = (label: string) => createHmac("sha256", mailmanWebSecret).update(`mailinfra mailman3-web ${label}`).digest("hex");
    return { djangoSecretKey: derive("django SECRET_KEY"), restPassword: derive("mailman REST admin_pass"), archiverKey: derive("hyperkitty api_key") };
}

/** What the committed rendering and previews show in place of the derived keys. */
const MASKED_WEB_KEYS: MailmanWebKeys = {
    djangoSecretKey: "(derived from secret mailinfra:mailmanWebSecret)",
    restPassword: "(derived from secret mailinfra:mailmanWebSecret)",
    archiverKey: "(derived from secret mailinfra:mailmanWebSecret)",
};

/** Names the web UI answers to: the host's FQDN, lists.web.hostnames, and localhost (Mailman core's archiver). */
export function mailmanWebHostnames(cfg: StackConfig, host: string): string[] {
    return [...new Set([fqdnOf(cfg, host), ...cfg.lists.web.hostnames])];
}

/** A file whose content needs the derived web keys: the masked rendering is its public face, the real one a secret. */
function withWebKeys(spec: Omit<FileSpec, "content">, renderWith: (keys: MailmanWebKeys) => string): FileSpec {
    return {
        ...spec,
        content: renderWith(MASKED_WEB_KEYS),
        fromSecrets: { names: ["mailmanWebSecret"], render: (s) => renderWith(mailmanWebKeys(s.mailmanWebSecret)) },
    };
}

function mailmanPart(cfg: StackConfig, host: string): Partial<HostPlan> {
    const web = listsWebEnabled(cfg);
    const data = { ...templateData(cfg, host), siteOwner: cfg.mail.postmaster, restPort: MAILMAN_REST_PORT };
    const coreConfig: Omit<FileSpec, "content"> = {
        path: "/etc/mailman3/mailman.cfg",
        mode: "0640",
        owner: "root",
        group: "list",
        validate: `runuser -u list -- mailman -C "$NEW" info >/dev/null`,
        notify: ["mailman3"],
    };
    const renderCore = (keys?: MailmanWebKeys) => render("lists/etc/mailman3/mailman.cfg.ejs", { ...data, web: keys && { restPassword: keys.restPassword } });
    return {
        packages: ["mailman3"],
        files: [
            ...(web ? [hyperkittyArchiverFile(cfg, host)] : []),
            web ? { ...withWebKeys(coreConfig, renderCore), requires: ["/etc/mailman3/mailman-hyperkitty.cfg"] } : { ...coreConfig, content: renderCore() },
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

/** Debian's answers for mailman3-web: dbconfig-common with SQLite, no web server touched (nginx is ours). */
export const MAILMAN_WEB_DEBCONF = [
    "mailman3-web mailman3-web/dbconfig-install boolean true",
    "mailman3-web mailman3-web/database-type select sqlite3",
    "mailman3-web mailman3-web/configure-webserver multiselect none",
    "mailman3-web mailman3-web/restart-webserver boolean false",
].join("\n");

/** Mailman core's HyperKitty archiver (python3-mailman-hyperkitty): where to post each message, with which key. */
function hyperkittyArchiverFile(cfg: StackConfig, host: string): FileSpec {
    return withWebKeys(
        {
            path: "/etc/mailman3/mailman-hyperkitty.cfg",
            mode: "0640",
            owner: "root",
            group: "list",
            validate: `python3 -c 'import configparser, sys; c = configparser.ConfigParser(); c.read_file(open(sys.argv[1])); [c["general"][k] for k in ("base_url", "api_key")]' "$NEW"`,
            notify: ["mailman3"],
        },
        (keys) => render("lists/etc/mailman3/mailman-hyperkitty.cfg.ejs", { ...templateData(cfg, host), archiverKey: keys.archiverKey }),
    );
}

/** Django's settings are checked with Debian's settings.py around the staged file, as the user uwsgi runs as. */
const DJANGO_CHECK = [
    `d=$(mktemp -d) && trap 'rm -rf "$d"' EXIT && chmod 0755 "$d"`,
    `install -m 0644 /usr/share/mailman3-web/settings.py "$d/" && ln -s "$NEW" "$d/settings_local.py"`,
    `cd /usr/share/mailman3-web && runuser -u www-data -- env PYTHONPATH="$d:/usr/share/mailman3-web" python3 /usr/bin/django-admin check --settings settings --no-color`,
].join("\n");

/** nginx -t on the staged site alone, inside a minimal main config. */
const NGINX_CHECK = [
    `d=$(mktemp -d) && trap 'rm -rf "$d"' EXIT`,
    `printf 'pid %s/nginx.pid;\\nerror_log stderr;\\nevents {}\\nhttp {\\n  include /etc/nginx/mime.types;\\n  include %s;\\n}\\n' "$d" "$NEW" > "$d/nginx.conf"`,
    `nginx -t -q -c "$d/nginx.conf"`,
].join("\n");

/** Idempotent, like Debian's postinst (update_django): schema, static files, compressed assets; the site's name. */
export function mailmanWebStepScript(cfg: StackConfig, host: string): string {
    const name = mailmanWebHostnames(cfg, host)[0];
    return [
        "set -euo pipefail",
        // Debian's welcome page would answer plain HTTP instead of the redirect to HTTPS
        "rm -f /etc/nginx/sites-enabled/default",
        `dj() { (cd /usr/share/mailman3-web && runuser -u www-data -- python3 /usr/bin/django-admin "$@" --pythonpath /usr/share/mailman3-web --settings settings --no-color); }`,
        "dj migrate --no-input --verbosity 0",
        "dj collectstatic --no-input --verbosity 0",
        "dj compress --verbosity 0 >/dev/null",
        // the name in links of mails Django sends (sign-up confirmations) and HyperKitty's page titles
        `dj shell --command ${q(`from django.contrib.sites.models import Site; Site.objects.update_or_create(id=1, defaults={"domain": "${name}", "name": "${name}"})`)}`,
        "",
    ].join("\n");
}

/** Postorius + HyperKitty as Debian ships them (uwsgi on a socket, qcluster, cron), nginx in front with TLS. */
function mailmanWebPart(cfg: StackConfig, host: string): Partial<HostPlan> {
    const hostnames = mailmanWebHostnames(cfg, host);
    const data = {
        ...templateData(cfg, host),
        listsDomain: listsDomainOf(cfg) ?? fqdnOf(cfg, host),
        restPort: MAILMAN_REST_PORT,
        // Host: localhost is how Mailman core's archiver and template fetches arrive (nginx loopback server)
        allowedHosts: [...hostnames, "localhost"],
        hostnames,
    };
    return {
        packages: ["mailman3-web", "python3-mailman-hyperkitty", "nginx"],
        debconf: MAILMAN_WEB_DEBCONF,
        files: [
            withWebKeys(
                {
                    path: "/etc/mailman3/mailman-web.py",
                    mode: "0640",
                    owner: "root",
                    group: "www-data",
                    validate: DJANGO_CHECK,
                    notify: ["mailman3-web"],
                },
                (keys) => render("lists/etc/mailman3/mailman-web.py.ejs", { ...data, ...keys }),
            ),
            {
                path: "/etc/nginx/sites-enabled/mailman3-web",
                content: render("lists/etc/nginx/sites-enabled/mailman3-web.ejs", data),
                mode: "0644",
                owner: "root",
                group: "root",
                validate: NGINX_CHECK,
                requires: cfg.tls.certificate ? [MANAGED_TLS.certificate, MANAGED_TLS.privateKey] : [],
                notify: ["nginx"],
            },
        ],
        steps: [{ name: "mailman-web", script: mailmanWebStepScript(cfg, host), after: ["files"] }],
        // nginx: HTTP only redirects to HTTPS
        ports: [
            { port: 80, from: "all", service: "lists web UI (redirect to https)" },
            { port: 443, from: "all", service: "lists web UI" },
        ],
        services: [
            { name: "mailman3-web", onChange: "restart" },
            { name: "nginx", onChange: "reload-or-restart" },
        ],
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
        { files: [relayDomains, eximDefaultsFile()], ports: [{ port: 25, from: "all", service: "smtp (secondary MX, lists)" }] },
        inboundFilterPart(),
        exim,
        spamassassinPart(cfg),
        mailmanPart(cfg, host),
        listsWebEnabled(cfg) ? mailmanWebPart(cfg, host) : {},
    );
}
