// Apache in front of a ticket system's web UI (RT, Znuny): HTTPS only with the host's certificate, plain
// HTTP redirected, the Mozilla intermediate profile. The application's Debian snippet stays as shipped.
import { StackConfig } from "../config";
import { FileSpec, HostPlan, render } from "../plan";
import { MANAGED_TLS, templateData } from "./common";

export const APACHE_SITE = "/etc/apache2/sites-available/mailinfra.conf";
/** Modules the site needs (ssl pulls in socache_shmcb). */
const MODULES = ["socache_shmcb", "ssl", "rewrite", "headers"];

/**
 * The staged site checked by Apache itself, in a copy of /etc/apache2 where it is enabled together with
 * its modules and Debian's default site is gone, exactly as the apache step leaves the live tree.
 */
export const APACHE_CHECK = [
    `d=$(mktemp -d) && trap 'rm -rf "$d"' EXIT`,
    `cp -a /etc/apache2/. "$d/"`,
    `cp "$NEW" "$d/sites-available/mailinfra.conf"`,
    `ln -sfn ../sites-available/mailinfra.conf "$d/sites-enabled/mailinfra.conf"`,
    `rm -f "$d/sites-enabled/000-default.conf"`,
    `for m in ${MODULES.join(" ")}; do for x in load conf; do [ ! -e "$d/mods-available/$m.$x" ] || ln -sfn "../mods-available/$m.$x" "$d/mods-enabled/$m.$x"; done; done`,
    `. /etc/apache2/envvars`,
    `export APACHE_RUN_DIR="$d/run" APACHE_LOCK_DIR="$d/lock" APACHE_PID_FILE="$d/run/apache2.pid" && mkdir -p "$d/run" "$d/lock"`,
    `apache2 -t -d "$d" -f "$d/apache2.conf"`,
].join("\n");

export interface WebUi {
    /** Shown in the site's header comment. */
    app: string;
    /** Where https://host/ sends a browser. */
    landing: string;
    /** Why plain HTTP stays open on loopback (unset: it does not). */
    loopbackHttp?: string;
    /** Extra idempotent setup run before the site is enabled (sets changed=1 when it changed something). */
    setup?: string;
}

/** The site file, its modules, Debian's default site off, and apache2 reloaded when the site or the certificate changes. */
export function apacheHttpsPart(cfg: StackConfig, host: string, ui: WebUi): Partial<HostPlan> {
    const site: FileSpec = {
        path: APACHE_SITE,
        content: render("shared/apache2/sites-available/mailinfra.conf.ejs", { ...templateData(cfg, host), app: ui.app, landing: ui.landing, loopbackHttp: ui.loopbackHttp }),
        mode: "0644",
        owner: "root",
        group: "root",
        validate: APACHE_CHECK,
        requires: cfg.tls.certificate ? [MANAGED_TLS.certificate, MANAGED_TLS.privateKey] : [],
        notify: ["apache2"],
    };
    const script = `set -euo pipefail
changed=0
${ui.setup ?? ""}
for m in ${MODULES.join(" ")}; do [ -e /etc/apache2/mods-enabled/$m.load ] || { a2enmod -q $m; changed=1; }; done
[ -e /etc/apache2/sites-enabled/mailinfra.conf ] || { a2ensite -q mailinfra; changed=1; }
[ ! -e /etc/apache2/sites-enabled/000-default.conf ] || { a2dissite -q 000-default; changed=1; }
apache2ctl configtest
systemctl enable --quiet apache2
if [ "$changed" = 1 ] || ! systemctl is-active --quiet apache2; then systemctl restart apache2; fi
`;
    return {
        packages: ["apache2", "ssl-cert"],
        files: [site],
        steps: [{ name: "apache", script, after: ["files"] }],
        services: [{ name: "apache2", onChange: "reload" }],
        // 80 only redirects to 443
        ports: [
            { port: 80, from: "all", service: `${ui.app} web UI (redirect to HTTPS)` },
            { port: 443, from: "all", service: `${ui.app} web UI` },
        ],
    };
}
