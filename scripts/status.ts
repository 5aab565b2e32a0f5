// Status of a stack's running fleet:   npm run status -- <stack> [--no-probes] [--dns-server IP]
// Per host: services, listening ports, TLS versions and certificate expiry, Exim queue, account DB
// copy age (relays), last backup age (store); the DNS records against the model; security probes
// from here (this machine must be outside mail.ownNetworks). Exit 0 all ok, 1 failures, 2 warnings.
import * as dns from "dns";
import { parseArgs } from "util";
import { planFleet } from "../lib/roles";
import { Check, checkSubmissionRateLimit, RATE_LIMITED_SCRIPT, checkAge, checkCertificate, checkDns, checkPorts, checkProbe, checkQueue, checkServedCertificate, checkService, checkTlsVersions, DEFAULT_THRESHOLDS, DnsObservation, dnsKey, expectedDnsRecords, exitCodeOf, FORBIDDEN_PORTS, mxHosts, publicPorts, renderTable, ROLE_PORTS, ROLE_SERVICES, statusTargets } from "../lib/status";
import { observeTls, portOpen, probeAuthBeforeTls, probeHostileLocalParts, probeOpenRelay, probePlaintextImap } from "../lib/probe";
import { BACKUP_STAMP } from "../lib/parts/backup";
import { certificatePin } from "../lib/smoke";
import { closeAllSessions, sessionFor } from "../provider/ssh";
import { loadStack, LoadedStack } from "./stack";

const LAB_DNS = "198.51.100.1";

/** One SSH command per host: everything the host-side checks need, as key=value lines. */
function hostScript(services: string[], role: string): string {
    return [
        `echo "ports=$(ss -ltnH | awk '{print $4}' | sed 's/.*://' | sort -un | paste -sd,)"`,
        ...services.map((s) => `echo "service.${s}=$(systemctl is-active ${s} 2>/dev/null || true)"`),
        `echo "queue=$(exim4 -bpc 2>/dev/null || echo x)"`,
        role === "relay" ? `echo "userdb=$(stat -c %Y /var/vmaildb/user.db 2>/dev/null || true)"` : "",
        role === "imap" ? `echo "ratelimited=$(${RATE_LIMITED_SCRIPT})"` : "",
        role === "imap" ? `echo "backup=$(cut -d' ' -f1-2 ${BACKUP_STAMP} 2>/dev/null || true)"; echo "backupMtime=$(stat -c %Y ${BACKUP_STAMP} 2>/dev/null || true)"` : "",
        `echo "now=$(date +%s)"`,
    ].filter(Boolean).join("\n") + "\n";
}

async function hostChecks(stack: LoadedStack, now: Date): Promise<Check[]> {
    const checks: Check[] = [];
    const pinned = certificatePin(stack.cfg.tls.certificate)?.fingerprint256;
    const plans = Object.fromEntries(planFleet(stack.cfg).map((p) => [p.host, p]));
    await Promise.all(
        statusTargets(stack.cfg).map(async (h) => {
            const mine: Check[] = [];
            const services = [...new Set([...ROLE_SERVICES[h.role], ...(plans[h.name]?.services.map((s) => s.name) ?? [])])];
            let kv: Record<string, string> = {};
            try {
                const r = await sessionFor(stack.connection(h.name)).run(hostScript(services, h.role));
                kv = Object.fromEntries(r.stdout.split("\n").filter((l) => l.includes("=")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]));
            } catch (e) {
                checks.push({ host: h.name, check: "ssh", verdict: "fail", detail: (e as Error).message });
                return;
            }
            for (const s of services) mine.push(checkService(h.name, s, kv[`service.${s}`] ?? ""));
            const listening = (kv.ports ?? "").split(",").filter(Boolean).map(Number);
            // ports the firewall opens to named peers only are not reachable from here by design
            const open = publicPorts(plans[h.name]);
            const ports = ROLE_PORTS[h.role].filter(([p]) => open.has(p));
            const restricted = new Set(ROLE_PORTS[h.role].map(([p]) => p).filter((p) => !open.has(p)));
            const reachable: Record<number, boolean> = {};
            for (const p of [...ports.map(([p]) => p), ...FORBIDDEN_PORTS]) reachable[p] = await portOpen(h.address, p);
            mine.push(...checkPorts(h.name, h.role, listening, reachable, restricted));
            for (const [port, mode] of ports) {
                if (!reachable[port]) continue;
                const t = await observeTls(h.address, port, mode);
                mine.push(checkTlsVersions(h.name, port, t.accepted));
                mine.push(checkCertificate(h.name, port, t.notAfter, now));
                mine.push(checkServedCertificate(h.name, port, t.fingerprint256, pinned));
            }
            mine.push(checkQueue(h.name, kv.queue === undefined ? undefined : Number(kv.queue)));
            const th = DEFAULT_THRESHOLDS;
            if (h.role === "relay")
                mine.push(checkAge(h.name, "account DB copy", kv.userdb ? Number(kv.userdb) : undefined, now, th.userdbWarnMinutes * 60, th.userdbFailMinutes * 60, "account DB copy"));
            if (h.role === "imap") mine.push(checkSubmissionRateLimit(h.name, kv.ratelimited, stack.cfg));
            if (h.role === "imap" && stack.cfg.backup) {
                const c = checkAge(h.name, "last backup", kv.backupMtime ? Number(kv.backupMtime) : undefined, now, th.backupFailHours * 3600, th.backupFailHours * 3600, "backup yet");
                if (kv.backup) c.detail += ` (${kv.backup.replace(" ", ", ")})`;
                mine.push(c);
            }
            checks.push(...mine);
        }),
    );
    return checks;
}

async function dnsChecks(stack: LoadedStack, server: string | undefined): Promise<Check[]> {
    const expected = expectedDnsRecords(stack.cfg);
    const resolver = new dns.promises.Resolver({ timeout: 3000, tries: 2 });
    if (server) resolver.setServers([server]);
    const observed: DnsObservation = {};
    for (const key of new Set(expected.map(dnsKey))) {
        const [type, name] = key.split(" ");
        try {
            if (type === "MX") observed[key] = (await resolver.resolveMx(name)).map((m) => `${m.priority} ${m.exchange}`);
            else if (type === "TXT") observed[key] = (await resolver.resolveTxt(name)).map((chunks) => chunks.join(""));
            else if (type === "A") observed[key] = await resolver.resolve4(name);
            else if (type === "PTR") observed[key] = await resolver.resolvePtr(name);
        } catch (e) {
            observed[key] = { error: (e as NodeJS.ErrnoException).code ?? (e as Error).message };
        }
    }
    return checkDns(expected, observed);
}

/** Security probes from this machine ("the internet"). */
async function probeChecks(stack: LoadedStack): Promise<Check[]> {
    const cfg = stack.cfg;
    const out: Check[] = [];
    const mx = new Set(mxHosts(cfg));
    const plans = Object.fromEntries(planFleet(cfg).map((p) => [p.host, p]));
    for (const h of statusTargets(cfg)) {
        // only what the firewall lets the internet reach (the store's 25 takes only the relays)
        const open = publicPorts(plans[h.name]);
        const smtpFacing = mx.has(h.name) || (open.has(25) && ROLE_PORTS[h.role].some(([p]) => p === 25));
        if (smtpFacing) out.push(checkProbe(await probeOpenRelay(h.address, h.name)));
        for (const [port, mode] of ROLE_PORTS[h.role]) if (mode === "starttls" && open.has(port)) out.push(checkProbe(await probeAuthBeforeTls(h.address, h.name, port)));
        if (h.role === "imap") out.push(checkProbe(await probePlaintextImap(h.address, h.name)));
        if (h.role === "relay") for (const p of await probeHostileLocalParts(h.address, h.name, cfg.mail.localDomains[0])) out.push(checkProbe(p));
    }
    return out;
}

async function main() {
    const { values, positionals } = parseArgs({
        allowPositionals: true,
        options: { "no-probes": { type: "boolean" }, "probes-only": { type: "boolean" }, "dns-server": { type: "string" }, json: { type: "boolean" } },
    });
    const stackName = positionals[0] ?? "lab";
    const stack = loadStack(stackName);
    const now = new Date();
    const dnsServer = values["dns-server"] ?? (stack.cfg.dns.backend === "lab" ? LAB_DNS : undefined);
    const checks: Check[] = [];
    if (!values["probes-only"]) {
        checks.push(...(await hostChecks(stack, now)));
        if (stack.cfg.dns.backend !== "none") checks.push(...(await dnsChecks(stack, dnsServer)));
    }
    if (!values["no-probes"]) checks.push(...(await probeChecks(stack)));
    closeAllSessions();
    const order = Object.keys(stack.cfg.hosts);
    checks.sort((a, b) => (order.indexOf(a.host) === -1 ? 99 : order.indexOf(a.host)) - (order.indexOf(b.host) === -1 ? 99 : order.indexOf(b.host)));
    console.log(values.json ? JSON.stringify(checks, null, 2) : `status of stack ${stackName} at ${now.toISOString()}\n${renderTable(checks)}`);
    process.exit(exitCodeOf(checks));
}

main().catch((e) => {
    console.error(`status: ${e.message}`);
    process.exit(1);
});
