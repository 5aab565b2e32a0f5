// The RT host (seed: streber): request-tracker5 from Debian on SQLite, Apache (Debian's fcgid snippet shipped
// with rt5-apache2; the web UI over HTTPS only, rt-mailgate over loopback HTTP), and Exim handing <queue>@ / <queue>-comment@ to rt-mailgate taint-safely.
import { StackConfig } from "../config";
import { emptyPlan, HostPlan, mergePlans, render } from "../plan";
import { basePart, eximPart, templateData } from "../parts/common";
import { apacheHttpsPart } from "../parts/apache";
import { ticketDbClients } from "./otrs";

export const RT_URL = "http://localhost/rt";
export const RT_DB = "/var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb";
export const RT_QUEUES_FILE = "/etc/exim4/rt_queues";
const QUEUE_TOOL = "/usr/local/sbin/mailinfra-rt-queues";

export function planRt(cfg: StackConfig, host: string): HostPlan {
    const rtDomain = cfg.mail.rtDomains[0] ?? `rt.${cfg.mail.hostDomain}`;
    const queues = cfg.tickets.rt.queues;
    const data = { ...templateData(cfg, host), relays: ticketDbClients(cfg), rtUrl: RT_URL };
    const exim = eximPart("rt/etc/exim4/exim4.conf.ejs", data);
    exim.files![0].requires = [RT_QUEUES_FILE];
    return mergePlans(
        emptyPlan(host, "rt"),
        basePart(cfg, host),
        {
            files: [
                {
                    // lsearch keys only: the router returns the key itself (ret=key), so the pipe sees this spelling
                    path: RT_QUEUES_FILE,
                    content: `# RT queues reachable by mail, rendered by mailinfra from mailinfra:tickets.rt.queues\n${queues.map((q) => `${q}\n`).join("")}`,
                    mode: "0644",
                    owner: "root",
                    group: "root",
                    validate: `awk '/^(#|$)/{next} !/^[a-z0-9][a-z0-9_.-]*$/{printf "line %d is not a queue name: %s\\n", NR, $0; bad=1} END{exit bad}' "$NEW"`,
                },
            ],
        },
        exim,
        {
            // libfcgi-perl: rt-server.fcgi needs FCGI.pm, which rt5-apache2 gets only through Recommends (installed without)
            packages: ["request-tracker5", "rt5-db-sqlite", "rt5-apache2", "rt5-clients", "libapache2-mod-fcgid", "libfcgi-perl", "sqlite3", "w3m"],
            // Debian's questions answered up front; RT's DB is created by dbconfig-common (SQLite) during install.
            // No initial root password: the web UI login stays closed until an operator sets one.
            debconf: [
                `request-tracker5 request-tracker5/rtname string ${rtDomain}`,
                `request-tracker5 request-tracker5/organization string ${rtDomain}`,
                `request-tracker5 request-tracker5/correspondaddress string ${queues[0] ?? "general"}@${rtDomain}`,
                `request-tracker5 request-tracker5/commentaddress string ${queues[0] ?? "general"}-comment@${rtDomain}`,
                "request-tracker5 request-tracker5/webbaseurl string http://localhost",
                "request-tracker5 request-tracker5/webpath string /rt",
                "request-tracker5 request-tracker5/handle-siteconfig-permissions boolean true",
                "request-tracker5 request-tracker5/install-cronjobs boolean true",
                "request-tracker5 request-tracker5/dbconfig-install boolean true",
                "request-tracker5 request-tracker5/database-type select sqlite3",
                "rt5-db-sqlite rt5-db-sqlite/available boolean true",
            ].join("\n"),
            files: [
                {
                    path: QUEUE_TOOL,
                    content: render("rt/usr/local/sbin/mailinfra-rt-queues.ejs", {}),
                    mode: "0755",
                    owner: "root",
                    group: "root",
                    validate: `perl -c "$NEW"`,
                },
            ],
            ports: [
                { port: 25, from: ticketDbClients(cfg), service: "smtp from the relays (queue mail)" },
            ],
            steps: [
                ...(queues.length
                    ? [{ name: "rt-queues", script: `set -euo pipefail\n${QUEUE_TOOL} ${queues.join(" ")}\n`, after: ["files" as const] }]
                    : []),
            ],
        },
        apacheHttpsPart(cfg, host, {
            app: "Request Tracker (request-tracker5)",
            landing: "/rt/",
            loopbackHttp: `rt-mailgate (Exim's rt_mailgate transport) posts mail to ${RT_URL}; Debian's snippet allows its NoAuth path to local clients only`,
            // Debian's fcgid snippet, as shipped with rt5-apache2
            setup: `[ -e /etc/apache2/mods-enabled/fcgid.load ] || { a2enmod -q fcgid; changed=1; }
[ -L /etc/apache2/conf-available/request-tracker5.conf ] || { ln -sfn /etc/request-tracker5/apache2-fcgid.conf /etc/apache2/conf-available/request-tracker5.conf; changed=1; }
[ -e /etc/apache2/conf-enabled/request-tracker5.conf ] || { a2enconf -q request-tracker5; changed=1; }`,
        }),
    );
}
