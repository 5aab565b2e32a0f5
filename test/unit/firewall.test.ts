// The firewall planner: each host's nftables rule set derived from the ports its parts declare, the
// adminNetworks config, and the daemons' own host restrictions (store Exim, lily's ports).
import { describe, expect, it } from "vitest";
import { cidrProblem, parseStackConfig } from "../../lib/config";
import { HostPlan, PortSpec } from "../../lib/plan";
import { renderRuleset } from "../../lib/parts/firewall";
import { planFleet } from "../../lib/roles";
import { checkPorts, publicPorts } from "../../lib/status";
import { labWith, problemsOf, stackConfig } from "./stackConfig";

const prod = () => parseStackConfig(stackConfig("prod"));
const lab = () => parseStackConfig(stackConfig("lab"));
const planOf = (cfg: ReturnType<typeof prod>, host: string) => planFleet(cfg).find((p) => p.host === host)!;
const fileOf = (plan: HostPlan, path: string) => plan.files.find((f) => f.path === path)!;
const rulesOf = (plan: HostPlan) => fileOf(plan, "/etc/nftables.conf").content;
/** "port from" per declared port: the per-role table of the issue. */
const table = (plan: HostPlan) => plan.ports.map((p) => `${p.port} ${Array.isArray(p.from) ? p.from.join(",") : p.from}`).sort();

describe("firewall per role, from the plan's ports", () => {
    it("opens exactly each prod role's ports to whom the issue says", () => {
        const cfg = prod();
        const [relay, store, lists, otrs] = ["203.0.113.10", "203.0.113.11", "203.0.113.12", "203.0.113.13"];
        // the store pushes the account DB (prod has no Bayes key and no backups configured: no further SSH)
        expect(table(planOf(cfg, "mchenry"))).toEqual(["22 adminNetworks", `22 ${store}`, "25 all", "465 all"].sort());
        expect(table(planOf(cfg, "sanger"))).toEqual(["22 adminNetworks", `25 ${relay},${lists}`, "465 all", "587 all", "993 all"].sort());
        // lily: secondary MX and lists web UI; no 465
        expect(table(planOf(cfg, "lily"))).toEqual(["22 adminNetworks", "25 all", "443 all", "80 all"].sort());
        expect(table(planOf(cfg, "williams"))).toEqual(["22 adminNetworks", `25 ${relay},${lists}`, `3306 ${relay},${lists}`, "443 all", "80 all"].sort());
        expect(table(planOf(cfg, "streber"))).toEqual(["22 adminNetworks", `25 ${relay},${lists}`, "443 all", "80 all"].sort());
        expect(otrs).toBe(cfg.hosts.williams.address);
    });

    it("gives the backup target SSH from the store only when it is one (lab: lily)", () => {
        const plan = planOf(lab(), "lily");
        expect(plan.ports).toContainEqual({ port: 22, from: ["198.51.100.12"], service: "ssh from the store: backups and restores" });
        expect(rulesOf(plan)).toContain(`tcp dport 22 ip saddr { 198.51.100.12 } accept comment "ssh from the store: backups and restores"`);
    });

    it("renders an inet table (IPv4 and IPv6) that drops by default and accepts established, loopback and essential ICMP", () => {
        const rules = rulesOf(planOf(prod(), "sanger"));
        expect(rules).toMatch(/^table inet mailinfra\ndelete table inet mailinfra\n\ntable inet mailinfra \{/m);
        expect(rules).toContain("type filter hook input priority filter; policy drop;");
        expect(rules).toContain("type filter hook forward priority filter; policy drop;");
        expect(rules).toMatch(/ct state established,related accept\n\t+ct state invalid drop\n\t+iif "lo" accept/);
        expect(rules).toMatch(/icmp type \{ destination-unreachable, time-exceeded, parameter-problem, echo-request \} accept/);
        expect(rules).toMatch(/icmpv6 type \{[^}]*packet-too-big[^}]*nd-neighbor-solicit, nd-neighbor-advert \} accept/);
        // SSH from the admin sets, both families; never from all
        expect(rules).toContain("elements = { 203.0.113.240/28 }");
        expect(rules).toContain("elements = { 2001:db8:672:ad::/64 }");
        expect(rules).toContain("tcp dport 22 ip saddr @admin_v4 accept");
        expect(rules).toContain("tcp dport 22 ip6 saddr @admin_v6 accept");
        expect(rules).not.toMatch(/tcp dport 22 accept/);
        expect(rules).toContain(`tcp dport 25 ip saddr { 203.0.113.10, 203.0.113.12 } accept`);
        for (const host of ["mchenry", "sanger", "lily", "williams", "streber"]) expect(rulesOf(planOf(prod(), host))).not.toMatch(/tcp dport 3306 accept/);
    });

    it("makes a new port a one-line declaration (e.g. webmail on the store's 443)", () => {
        const plan = planOf(prod(), "sanger");
        const webmail: PortSpec = { port: 443, from: "all", service: "webmail" };
        const rules = renderRuleset(prod(), { ...plan, ports: [...plan.ports, webmail] });
        expect(rules).toMatch(/tcp dport 993 accept comment "imaps"\n\t+tcp dport 443 accept comment "webmail"|tcp dport 443 accept comment "webmail"/);
        expect(rules.split("\n").filter((l) => l.includes("dport 443"))).toEqual(['\t\ttcp dport 443 accept comment "webmail"']);
    });

    it("splits a port's sources by family and joins the services of the same port and sources into one rule", () => {
        const rules = renderRuleset(lab(), { host: "h", role: "relay", ports: [
            { port: 22, from: ["198.51.100.12"], service: "a" },
            { port: 22, from: ["198.51.100.12"], service: "b" },
            { port: 5000, from: ["192.0.2.1", "2001:db8::1"], service: "c" },
        ] });
        expect(rules).toContain(`tcp dport 22 ip saddr { 198.51.100.12 } accept comment "a, b"`);
        expect(rules).toContain(`tcp dport 5000 ip saddr { 192.0.2.1 } accept comment "c"`);
        expect(rules).toContain(`tcp dport 5000 ip6 saddr { 2001:db8::1 } accept comment "c"`);
    });

    it("checks the rule set on the host with nft -c and the lockout check before it goes live, then reloads nftables", () => {
        const plan = planOf(lab(), "mchenry");
        const conf = fileOf(plan, "/etc/nftables.conf");
        expect(conf).toMatchObject({ validate: '/usr/local/sbin/mailinfra-firewall-check "$NEW"', requires: ["/usr/local/sbin/mailinfra-firewall-check"], notify: ["nftables"], keepOnDelete: true });
        const check = fileOf(plan, "/usr/local/sbin/mailinfra-firewall-check").content;
        expect(check).toContain('nft -c -f "$new"');
        expect(check).toContain("SSH_CLIENT");
        expect(check).toContain("unshare --net");
        expect(check).toContain("(now: 198.51.100.1/32)");
        expect(plan.packages).toContain("nftables");
        expect(plan.services).toContainEqual({ name: "nftables", onChange: "reload-or-restart" });
    });
});

describe("mailinfra:ssh.adminNetworks", () => {
    it("is required", () => {
        expect(problemsOf(labWith((c) => delete c.ssh.adminNetworks))).toEqual(["mailinfra:ssh.adminNetworks: missing required key"]);
        expect(problemsOf(labWith((c) => (c.ssh.adminNetworks = [])))[0]).toMatch(/^mailinfra:ssh\.adminNetworks: must NOT have fewer than 1 items/);
    });

    it("takes network addresses with a valid prefix only, IPv4 or IPv6", () => {
        expect(problemsOf(labWith((c) => (c.ssh.adminNetworks = ["198.51.100.1/24", "198.51.100.0/33", "300.1.1.0/24", "2001:db8::/32"])))).toEqual([
            "mailinfra:ssh.adminNetworks: 198.51.100.1/24 has host bits set (write the network address, or /32 or /128 for one host)",
            "mailinfra:ssh.adminNetworks: 198.51.100.0/33 has a prefix outside 0-32",
            "mailinfra:ssh.adminNetworks: 300.1.1.0/24 is not an IPv4 or IPv6 address with a /prefix",
        ]);
        expect(cidrProblem("2001:db8::1/64")).toMatch(/host bits/);
        expect(cidrProblem("2001:db8:672:ad::/64")).toBeUndefined();
        expect(cidrProblem("198.51.100.1/32")).toBeUndefined();
    });

    it("lab: the build machine (.1) is in it, ext (.20) is not", () => {
        expect(lab().ssh.adminNetworks).toEqual(["198.51.100.1/32"]);
    });
});

describe("daemons restrict themselves too", () => {
    it("the store's Exim accepts unauthenticated mail for its domains only from the relays, lily and loopback", () => {
        const exim = fileOf(planOf(prod(), "sanger"), "/etc/exim4/exim4.conf").content;
        expect(exim).toContain("hostlist inbound_hosts = <; 127.0.0.1 ; ::1 ; 203.0.113.10 ; 203.0.113.12");
        expect(exim).toMatch(/accept +authenticated = \*\n.*\n +deny +message = mail for \$domain is accepted from the relays only\n +domains = \+local_domains\n +! hosts = \+inbound_hosts/);
    });

    it("lily's Exim listens on 25 only (no 465)", () => {
        const exim = fileOf(planOf(prod(), "lily"), "/etc/exim4/exim4.conf").content;
        expect(exim).toMatch(/^daemon_smtp_ports = 25$/m);
        expect(exim).not.toMatch(/tls_on_connect_ports/);
    });

    it("MariaDB binds the OTRS host's address (the relays come over TCP) and has accounts only for them", () => {
        const plan = planOf(prod(), "williams");
        expect(fileOf(plan, "/etc/mysql/mariadb.conf.d/60-mailinfra.cnf").content).toContain("bind-address = 203.0.113.13");
        expect(plan.steps.find((s) => s.name === "ticket-db-accounts")!.script).toContain("clients=('203.0.113.10' '203.0.113.12' 'localhost')");
    });
});

describe("status and the firewall", () => {
    it("checks a port the firewall opens to peers only for listening, not for reachability from here", () => {
        const plan = planOf(prod(), "sanger");
        const open = publicPorts(plan);
        expect([...open].sort((a, b) => a - b)).toEqual([465, 587, 993]);
        const checks = checkPorts("sanger", "imap", [22, 25, 465, 587, 993], { 465: true, 587: true, 993: true }, new Set([25]));
        expect(checks.find((c) => c.check === "port 25")).toMatchObject({ verdict: "ok", detail: "listening (firewalled: only its peers may connect)" });
        expect(checkPorts("sanger", "imap", [465, 587, 993], { 465: true, 587: true, 993: true }, new Set([25])).find((c) => c.check === "port 25")!.verdict).toBe("fail");
    });
});
