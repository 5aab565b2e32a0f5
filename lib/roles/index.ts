// Per-role planners: stack config → HostPlan. Each host is composed from parts (base, Exim core +
// role routers, Dovecot, account DB) so a role cannot pick an invalid mix of them.
import { hostsWithRole, StackConfig } from "../config";
import { emptyPlan, HostPlan, mergePlans } from "../plan";
import { basePart, eximPart, templateData } from "../parts/common";
import { planImap } from "./imap";
import { planOtrs } from "./otrs";
import { planLists } from "./lists";
import { planRelay } from "./relay";
import { planRt } from "./rt";
import { withBackupReceiver } from "../parts/backup";
import { withFirewall } from "../parts/firewall";

export { planImap } from "./imap";
export { aliasFiles, planRelay } from "./relay";
export { planOtrs } from "./otrs";
export { planRt } from "./rt";
export { planLists } from "./lists";

/** Lists, OTRS and RT hosts until their role issues land: a satellite Exim sending via the relay;
 *  mail the relay routes to the OTRS/RT host is kept in a local Maildir spool. */
export function planSatellite(cfg: StackConfig, host: string): HostPlan {
    const role = cfg.hosts[host].role;
    const domains = role === "rt" ? cfg.mail.rtDomains : role === "otrs" ? cfg.relay.otrs?.domains ?? [] : [];
    const relays = hostsWithRole(cfg, "relay").map(([, h]) => h.address);
    const data = { ...templateData(cfg, host), inbound: domains.length ? { domains, relays, maildir: INBOUND_MAILDIR } : undefined };
    return mergePlans(emptyPlan(host, role), basePart(cfg, host), eximPart("satellite/etc/exim4/exim4.conf.ejs", data), {
        directories: domains.length ? [{ path: INBOUND_MAILDIR.replace(/\/Maildir$/, ""), mode: "0750", owner: "mail", group: "mail" }] : [],
    });
}

export const INBOUND_MAILDIR = "/var/spool/mailinfra-inbound/Maildir";

export function planHost(cfg: StackConfig, host: string): HostPlan {
    switch (cfg.hosts[host].role) {
        case "relay":
            return planRelay(cfg, host);
        case "imap":
            return planImap(cfg, host);
        case "otrs":
            return planOtrs(cfg, host);
        case "rt":
            return planRt(cfg, host);
        case "lists":
            return planLists(cfg, host);
        default:
            return planSatellite(cfg, host);
    }
}

export function planFleet(cfg: StackConfig): HostPlan[] {
    return Object.keys(cfg.hosts)
        .sort()
        .map((h) => withFirewall(cfg, withBackupReceiver(cfg, planHost(cfg, h))));
}
